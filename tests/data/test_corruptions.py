"""The CIFAR-C generator against independent transcriptions of what make_cifar_c.py calls.

Oracles: literal loops transcribed from make_cifar_c.py (glass-blur pixel loop, plasma fractal)
and from ImageMagick 6's ``MotionBlurImage``; scipy's ``zoom`` and ``map_coordinates`` (which the
script and OpenCV's borders amount to); the standard library's ``colorsys`` for the HSV round trip.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
from scipy import ndimage

from calibench.data import CORRUPTIONS
from calibench.data import corruptions as gen
from calibench.errors import UsageError

RNG = np.random.default_rng(1234)
IMAGES = RNG.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)


def test_parameters_are_the_cifar_constants_of_every_corruption() -> None:
    assert set(gen.PARAMETERS) == set(CORRUPTIONS)
    assert all(len(v) == 5 for v in gen.PARAMETERS.values())
    assert gen.generated_corruptions(CORRUPTIONS) == tuple(c for c in CORRUPTIONS if c != "frost")
    # make_cifar_c.py, not the ImageNet-C constants (0.08 .. 0.38; JPEG quality 25 .. 7)
    assert gen.PARAMETERS["gaussian_noise"] == [0.04, 0.06, 0.08, 0.09, 0.10]
    assert gen.PARAMETERS["jpeg_compression"] == [80, 65, 58, 50, 40]


@pytest.mark.parametrize("name", gen.generated_corruptions(CORRUPTIONS))
def test_every_corruption_is_uint8_seeded_and_grows_with_severity(name: str) -> None:
    x = IMAGES
    outs = [gen.corrupt(name, s, x, np.random.default_rng(7)) for s in (1, 5)]
    for out in outs:
        assert out.dtype == np.uint8 and out.shape == x.shape
    np.testing.assert_array_equal(outs[1], gen.corrupt(name, 5, x, np.random.default_rng(7)))
    change = [np.abs(o.astype(int) - x).mean() for o in outs]
    assert change[0] > 0 and change[1] > 0
    if name != "elastic_transform":  # its severity 1 has the script's largest affine jitter
        assert change[1] > change[0], change


def test_corrupt_refuses_what_it_cannot_make() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(UsageError, match="frost photographs"):
        gen.corrupt("frost", 1, IMAGES, rng)
    with pytest.raises(UsageError, match=r"severity must be 1\.\.5"):
        gen.corrupt("fog", 0, IMAGES, rng)
    with pytest.raises(UsageError, match=r"uint8 \(N, 32, 32, 3\)"):
        gen.corrupt("fog", 1, IMAGES.astype(np.float32), rng)


def _glass_loop(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """make_cifar_c.py's loop, verbatim semantics (a tuple assignment through numpy views)."""
    x = x.copy()
    for i, h in enumerate(range(32 - 1, 1, -1)):
        for j, w in enumerate(range(32 - 1, 1, -1)):
            dx, dy = offsets[i, j]
            h_prime, w_prime = h + dy, w + dx
            x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    return x


def test_glass_shuffle_is_the_scripts_loop() -> None:
    rng = np.random.default_rng(3)
    u = IMAGES[:3]
    offsets = rng.integers(-1, 1, size=(3, 30, 30, 2))  # loop order: h, w = 31 .. 2
    want = np.stack([_glass_loop(img, off) for img, off in zip(u, offsets, strict=True)])
    # gen.glass_shuffle indexes h, w = 2 .. 31 (ascending)
    flipped = offsets[:, ::-1, ::-1]
    got = gen.glass_shuffle(u, dx=flipped[..., 0], dy=flipped[..., 1])
    np.testing.assert_array_equal(got, want)


def _scipy_clipped_zoom(img: np.ndarray, zoom_factor: float) -> np.ndarray:
    h = img.shape[0]
    ch = int(np.ceil(h / zoom_factor))
    top = (h - ch) // 2
    img = ndimage.zoom(img[top : top + ch, top : top + ch], (zoom_factor, zoom_factor, 1), order=1)
    trim_top = (img.shape[0] - h) // 2
    return img[trim_top : trim_top + h, trim_top : trim_top + h]


@pytest.mark.parametrize("zoom", [1.0, 1.01, 1.06, 1.13, 1.25, 1.75, 2.25])
def test_clipped_zoom_is_scipy_zoom(zoom: float) -> None:
    f = (IMAGES / 255.0).astype(np.float32)
    want = np.stack([_scipy_clipped_zoom(img, zoom) for img in f])
    np.testing.assert_allclose(gen._clipped_zoom(f, zoom), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("border", "mode"), [(gen._reflect101, "mirror"), (gen._reflect, "reflect")]
)
def test_bilinear_borders_are_scipys_modes(border, mode: str) -> None:
    img = RNG.random((2, 32, 32, 3))
    rows = RNG.uniform(-20, 52, size=(2, 32, 32))
    cols = RNG.uniform(-20, 52, size=(2, 32, 32))
    r0, c0 = np.floor(rows), np.floor(cols)
    got = gen._bilinear(img, r0.astype(int), c0.astype(int), rows - r0, cols - c0, border)
    for n in range(2):
        for c in range(3):
            want = ndimage.map_coordinates(img[n, :, :, c], [rows[n], cols[n]], order=1, mode=mode)
            np.testing.assert_allclose(got[n, :, :, c], want, atol=1e-12)


def test_affine_matrices_map_the_points_and_warp_identity_is_identity() -> None:
    pts1 = np.float32([[26, 26], [26, 6], [6, 6]])
    pts2 = pts1[None] + RNG.uniform(-2, 2, size=(4, 3, 2)).astype(np.float32)
    m = gen._affine_matrices(pts1, pts2)
    mapped = np.einsum("nij,kj->nki", m, np.concatenate([pts1, np.ones((3, 1))], axis=1))
    np.testing.assert_allclose(mapped, pts2, atol=1e-5)
    f = (IMAGES / 255.0).astype(np.float32)
    same = gen._affine_matrices(pts1, np.broadcast_to(pts1, (6, 3, 2)))
    np.testing.assert_allclose(gen._warp_affine(f, same), f, atol=1e-7)
    # a shift by exactly one pixel right: dst(x, y) = src(x - 1, y), src(-1) = src(1) (reflect 101)
    shifted = gen._affine_matrices(pts1, np.broadcast_to(pts1 + np.float32([1, 0]), (6, 3, 2)))
    out = gen._warp_affine(f, shifted)
    np.testing.assert_allclose(out[:, :, 1:], f[:, :, :-1], atol=1e-6)
    np.testing.assert_allclose(out[:, :, 0], f[:, :, 1], atol=1e-6)


def _imagemagick_motion_blur(
    img: np.ndarray, radius: float, sigma: float, angle: float
) -> np.ndarray:
    """ImageMagick 6 effect.c MotionBlurImage, pixel by pixel, edge virtual pixels, Q16 rounding."""
    width = int(2 * math.ceil(radius) + 1)
    kernel = [
        math.exp(-(i * i) / (2 * sigma * sigma)) / (math.sqrt(2 * math.pi) * sigma)
        for i in range(width)
    ]
    total = sum(kernel)
    kernel = [k / total for k in kernel]
    px, py = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
    offsets = [
        (math.ceil(i * py / math.hypot(px, py) - 0.5), math.ceil(i * px / math.hypot(px, py) - 0.5))
        for i in range(width)
    ]
    h, w, c = img.shape
    out = np.zeros(img.shape)
    for y in range(h):
        for x in range(w):
            for ch in range(c):
                acc = 0.0
                for k, (ox, oy) in zip(kernel, offsets, strict=True):
                    acc += k * img[min(max(y + oy, 0), h - 1), min(max(x + ox, 0), w - 1), ch] * 257
                quantum = math.floor(acc + 0.5)  # ClampToQuantum (Q16)
                out[y, x, ch] = (quantum + 128 - ((quantum + 128) >> 8)) >> 8  # ScaleQuantumToChar
    return out


def test_motion_blur_is_imagemagicks() -> None:
    small = IMAGES[:2, :12, :12].astype(np.float64)
    angles = np.array([-37.0, 21.5])
    got = gen._motion_blur(small, 6, 2, angles)
    want = np.stack(
        [_imagemagick_motion_blur(img, 6, 2, a) for img, a in zip(small, angles, strict=True)]
    )
    # double rounding (to 16, then 8 bits) can differ from one rounding by one level at most
    assert np.abs(got - want).max() <= 1 and (got == want).mean() > 0.99


def _plasma_loop(rng: np.random.Generator, mapsize: int = 32, wibbledecay: float = 3) -> np.ndarray:
    """make_cifar_c.py's plasma_fractal, verbatim, with ``np.random`` replaced by ``rng``."""
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100

    def wibbledmean(array):
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    def fillsquares():
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[stepsize // 2 : mapsize : stepsize, stepsize // 2 : mapsize : stepsize] = (
            wibbledmean(squareaccum)
        )

    def filldiamonds():
        drgrid = maparray[stepsize // 2 : mapsize : stepsize, stepsize // 2 : mapsize : stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ldrsum = drgrid + np.roll(drgrid, 1, axis=0)
        lulsum = ulgrid + np.roll(ulgrid, -1, axis=1)
        ltsum = ldrsum + lulsum
        maparray[0:mapsize:stepsize, stepsize // 2 : mapsize : stepsize] = wibbledmean(ltsum)
        tdrsum = drgrid + np.roll(drgrid, 1, axis=1)
        tulsum = ulgrid + np.roll(ulgrid, -1, axis=0)
        ttsum = tdrsum + tulsum
        maparray[stepsize // 2 : mapsize : stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)

    while stepsize >= 2:
        fillsquares()
        filldiamonds()
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


@pytest.mark.parametrize("decay", [3, 1.75])
def test_plasma_fractal_is_the_scripts(decay: float) -> None:
    got = gen._plasma_fractal(1, np.random.default_rng(5), decay)[0]
    np.testing.assert_allclose(
        got, _plasma_loop(np.random.default_rng(5), wibbledecay=decay), atol=1e-12
    )


def test_brightness_is_the_hsv_round_trip() -> None:
    x = IMAGES[:2].copy()
    x[0, 0, 0] = 0  # a black pixel turns grey
    x[0, 0, 1] = 128  # a grey pixel stays grey
    for severity, c in enumerate(gen.PARAMETERS["brightness"], start=1):
        got = gen.corrupt("brightness", severity, x, np.random.default_rng(0))
        want = np.empty(x.shape)
        for idx in np.ndindex(x.shape[:3]):
            h, s, v = colorsys.rgb_to_hsv(*(x[idx] / 255.0))
            want[idx] = np.clip(colorsys.hsv_to_rgb(h, s, min(v + c, 1.0)), 0, 1) * 255
        # truncation to uint8 may differ by one where the float lands next to an integer
        assert np.abs(got.astype(int) - want.astype(np.uint8)).max() <= 1
        assert (got == want.astype(np.uint8)).mean() > 0.995


def test_defocus_kernel_crop_changes_nothing() -> None:
    f = IMAGES / 255.0
    for radius, alias in gen.PARAMETERS["defocus_blur"]:
        kernel = gen._defocus_kernel(radius, alias)
        assert kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1
        assert abs(kernel.sum() - 1) < 1e-6
        full = np.zeros((17, 17), np.float32)
        pad = (17 - kernel.shape[0]) // 2
        full[pad : pad + kernel.shape[0], pad : pad + kernel.shape[1]] = kernel
        a = ndimage.correlate(f, kernel[None, :, :, None].astype(np.float64), mode="mirror")
        b = ndimage.correlate(f, full[None, :, :, None].astype(np.float64), mode="mirror")
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_noise_has_the_cifar_scale() -> None:
    x = np.full((50, 32, 32, 3), 128, np.uint8)
    noisy = gen.corrupt("gaussian_noise", 5, x, np.random.default_rng(0)).astype(float)
    assert abs((noisy - 128).std() / 255 - 0.10) < 0.003
    flipped = gen.corrupt("impulse_noise", 5, x, np.random.default_rng(0)) != 128
    assert abs(flipped.mean() - 0.07) < 0.005
