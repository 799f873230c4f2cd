"""The CIFAR-10-C corruptions, regenerated: a vectorised port of Hendrycks's ``make_cifar_c.py``.

Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019, released CIFAR-10-C and CIFAR-100-C as ``.npy`` files and the script
that made them, ``ImageNet-C/create_c/make_cifar_c.py`` in github.com/hendrycks/robustness. That
script is the only source of the **CIFAR-specific** severity constants (its ImageNet scripts, and
torch-uncertainty's ``transforms/corruption.py``, use other, stronger ones: Gaussian noise
0.08..0.38 there against 0.04..0.10 here). :data:`PARAMETERS` transcribes them.

Each function here follows that script step by step, on a whole batch at once, with its
rounding: the float result is clipped to ``[0, 255]`` and truncated to uint8 (``np.uint8``), as the
script does. The randomness differs: the script draws from numpy's global state image by image;
here one seeded ``numpy.random.Generator`` draws every image's noise of one (corruption, severity)
cell in one call. Same distributions, different draws: a generated image is *not* the official
one, and a suite built here is always labelled as generated.

Where the script calls a library that calibench does not depend on, the step is ported:

- ``skimage`` (``random_noise`` s&p, ``filters.gaussian``, ``rgb2hsv``/``hsv2rgb``) and scipy's
  ``zoom``/``map_coordinates``/``gaussian_filter``: the same formulas on scipy / numpy (exact up to
  float rounding).
- OpenCV (``GaussianBlur`` and ``filter2D`` in defocus blur, ``warpAffine`` in the elastic
  transform, ``cvtColor`` in snow): the same kernels, borders (``BORDER_REFLECT_101``) and
  OpenCV's 1/32-pixel grid of warp coordinates; equal up to float rounding.
- ImageMagick's ``MotionBlurImage`` (through Wand, in motion blur and snow): its one-sided
  Gaussian line kernel of width ``2 * ceil(radius) + 1``, its offsets
  ``ceil(i * cos(angle) - 0.5), ceil(i * sin(angle) - 0.5)``, edge pixels beyond the border and
  rounding to 8 bits, as ImageMagick 6's ``effect.c`` computes it (the same port as the
  ``imagecorruptions`` package of Michaelis et al. 2019). An approximation of the native tool,
  listed in :data:`APPROXIMATIONS`.
- The glass-blur "swap" of the script assigns through numpy views, so it *copies* the neighbour
  into the pixel and leaves the neighbour unchanged, with offsets in ``{-1, 0}``
  (``randint(-1, 1)``); that is what made the official files, and what is done here.

``frost`` blends the image with crops of six frost photographs shipped beside the script
(``frost1.png`` .. ``frost6.jpg``); they are not available offline, so it is in :data:`OMITTED`
and a generated suite has 14 corruptions.

Pixelate and JPEG go through PIL image by image, as the script does; everything else is numpy /
scipy on the batch. The output depends on numpy, scipy and PIL (libjpeg) versions only through
float rounding and the JPEG encoder; the record carries those versions.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any

import numpy as np
from scipy import ndimage

from calibench.errors import UsageError

__all__ = [
    "APPROXIMATIONS",
    "GENERATOR",
    "GENERATOR_VERSION",
    "OMITTED",
    "PARAMETERS",
    "corrupt",
    "generated_corruptions",
]

GENERATOR_VERSION = 1
GENERATOR = (
    f"calibench.data.corruptions v{GENERATOR_VERSION}: a vectorised numpy/scipy/PIL port of "
    "hendrycks/robustness ImageNet-C/create_c/make_cifar_c.py with its CIFAR severity constants"
)
MAKE_CIFAR_C = "github.com/hendrycks/robustness/blob/master/ImageNet-C/create_c/make_cifar_c.py"

_S = 32  # CIFAR image side; make_cifar_c.py hard-codes it

# The constants of make_cifar_c.py, one entry per severity 1..5, in its order and units.
PARAMETERS: dict[str, list[Any]] = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],  # std on the 0..1 scale
    "shot_noise": [500, 250, 100, 75, 50],  # Poisson rate per unit intensity
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],  # s&p amount, salt_vs_pepper 0.5
    # (disk radius, alias_blur sigma)
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    # (gaussian sigma, max_delta, iterations)
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    # (ImageMagick radius, sigma); angle uniform in [-45, 45] degrees
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    # zoom factors np.arange(start, stop, step)
    "zoom_blur": [
        (1, 1.06, 0.01),
        (1, 1.11, 0.01),
        (1, 1.16, 0.01),
        (1, 1.21, 0.01),
        (1, 1.26, 0.01),
    ],
    # (loc, scale, zoom, threshold, blur radius, blur sigma, image mix); angle in [-135, -45]
    "snow": [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ],
    # (image weight, frost weight)
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    # (fog strength, plasma-fractal wibble decay)
    "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],  # added to HSV value
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],  # factor around each channel's mean
    # (displacement scale, displacement smoothing sigma, affine jitter), in pixels (IMSIZE * ...)
    "elastic_transform": [
        (_S * 0, _S * 0, _S * 0.08),
        (_S * 0.05, _S * 0.2, _S * 0.07),
        (_S * 0.08, _S * 0.06, _S * 0.06),
        (_S * 0.1, _S * 0.04, _S * 0.05),
        (_S * 0.1, _S * 0.03, _S * 0.03),
    ],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],  # BOX down to int(32 * c) and back
    "jpeg_compression": [80, 65, 58, 50, 40],  # PIL JPEG quality
}

OMITTED: dict[str, str] = {
    "frost": (
        "blends crops of six frost photographs (frost1.png .. frost6.jpg) shipped with "
        "hendrycks/robustness; they are not available offline, so there is nothing to blend"
    ),
}

APPROXIMATIONS: dict[str, str] = {
    "motion_blur": (
        "ImageMagick's MotionBlurImage (Wand) re-implemented in numpy: same kernel, offsets, edge "
        "handling and 8-bit rounding, not the native tool"
    ),
    "snow": "its snow layer is motion-blurred with the same numpy port of ImageMagick",
    "elastic_transform": "OpenCV warpAffine re-implemented in numpy (bilinear, 1/32-pixel grid)",
    "defocus_blur": "OpenCV GaussianBlur + filter2D re-implemented with scipy (same borders)",
}


def generated_corruptions(all_names: tuple[str, ...]) -> tuple[str, ...]:
    """``all_names`` without the corruptions this generator cannot make (:data:`OMITTED`)."""
    return tuple(c for c in all_names if c not in OMITTED)


# -- helpers ----------------------------------------------------------------------------------
def _to_uint8(x: np.ndarray) -> np.ndarray:
    """``np.uint8(x)`` of a 0..255 float image, as the script's final cast: truncation."""
    return np.clip(x, 0, 255).astype(np.uint8)


def _reflect101(i: np.ndarray, n: int) -> np.ndarray:
    """OpenCV's BORDER_REFLECT_101 (``gfedcb|abcdefgh|gfedcba``) = scipy's ``mirror``."""
    period = 2 * n - 2
    i = np.abs(i) % period
    return np.where(i >= n, period - i, i)


def _reflect(i: np.ndarray, n: int) -> np.ndarray:
    """scipy's ``reflect`` (``dcba|abcd|dcba``), half-sample symmetric."""
    period = 2 * n
    i = np.mod(i, period)
    return np.where(i >= n, period - 1 - i, i)


def _gather(img: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``img[n, rows[n, ...], cols[n, ...], :]`` for every image ``n`` of ``img (N, H, W, C)``;
    ``rows`` and ``cols`` broadcast to ``(N, H', W')``."""
    n, h, w, c = img.shape
    flat = (np.arange(n).reshape((n,) + (1,) * (rows.ndim - 1)) * h + rows) * w + cols
    return np.take(img.reshape(n * h * w, c), flat, axis=0)


def _bilinear(
    img: np.ndarray,
    r0: np.ndarray,
    c0: np.ndarray,
    fr: np.ndarray,
    fc: np.ndarray,
    border: Callable[[np.ndarray, int], np.ndarray],
) -> np.ndarray:
    """Bilinear samples of ``img (N, H, W, C)`` at integer corners ``r0, c0 (N, H, W)`` plus
    fractions ``fr, fc``; indices outside the image are mapped by ``border``."""
    _, h, w, _ = img.shape
    ra, rb = border(r0, h), border(r0 + 1, h)
    ca, cb = border(c0, w), border(c0 + 1, w)
    fr, fc = fr[..., None], fc[..., None]
    top = _gather(img, ra, ca) * (1 - fc) + _gather(img, ra, cb) * fc
    bottom = _gather(img, rb, ca) * (1 - fc) + _gather(img, rb, cb) * fc
    return top * (1 - fr) + bottom * fr


def _zoom_matrix(h: int, zoom_factor: float) -> tuple[int, np.ndarray]:
    """make_cifar_c.py's ``clipped_zoom`` along one axis as ``(top, M)``: crop the centre
    ``ch = ceil(h / z)`` pixels from ``top``, zoom them to ``round(ch * z)`` by linear
    interpolation as ``scipy.ndimage.zoom(order=1)`` does (``grid_mode=False``: output pixel
    ``k`` samples input coordinate ``k * (ch - 1) / (out - 1)``), keep the centre ``h``;
    ``M (h, ch)`` holds the interpolation weights."""
    ch = int(np.ceil(h / zoom_factor))
    out = round(ch * zoom_factor)
    step = (ch - 1) / (out - 1) if out > 1 else 1.0
    trim = (out - h) // 2
    coords = np.arange(trim, trim + h) * step
    i0 = np.minimum(np.floor(coords).astype(np.int64), ch - 1)
    w = coords - i0
    m = np.zeros((h, ch))
    np.add.at(m, (np.arange(h), i0), 1 - w)
    np.add.at(m, (np.arange(h), np.minimum(i0 + 1, ch - 1)), w)
    return (h - ch) // 2, m


def _clipped_zoom_hwk(img: np.ndarray, zoom_factor: float) -> np.ndarray:
    """``clipped_zoom`` of images stacked as ``(H, W, K)`` (K = images x channels): bilinear
    interpolation is separable, so it is one matrix product per axis (rows, then columns)."""
    top, m = _zoom_matrix(img.shape[0], zoom_factor)
    ch = m.shape[1]
    crop = img[top : top + ch, top : top + ch].astype(np.float64)
    rows = (m @ crop.reshape(ch, -1)).reshape(len(m), ch, -1)  # (h, ch, K)
    return (m @ rows).astype(img.dtype)  # (h, ch) @ (h, ch, K): each row's columns


def _clipped_zoom(img: np.ndarray, zoom_factor: float) -> np.ndarray:
    """make_cifar_c.py's ``clipped_zoom`` on a batch ``(N, 32, 32, C)``, keeping its dtype."""
    n, h, w, c = img.shape
    hwk = img.transpose(1, 2, 0, 3).reshape(h, w, n * c)
    out = _clipped_zoom_hwk(hwk, zoom_factor)
    return out.reshape(h, w, n, c).transpose(2, 0, 1, 3)


def _motion_blur(x: np.ndarray, radius: float, sigma: float, angles: np.ndarray) -> np.ndarray:
    """ImageMagick 6 ``MotionBlurImage`` on 8-bit images ``x (N, H, W, C)`` (values 0..255),
    one angle (degrees) per image; returns the 8-bit result as float (rounded to integers).

    ``width = 2 * ceil(radius) + 1``; ``kernel[i] ∝ exp(-i^2 / (2 sigma^2))``, i = 0..width-1;
    output ``(x, y) = sum_i kernel[i] * p(x + ox[i], y + oy[i])`` with
    ``ox[i] = ceil(i * cos(angle) - 0.5)``, ``oy[i] = ceil(i * sin(angle) - 0.5)`` and pixels
    beyond the border taken from the nearest edge (ImageMagick's default virtual pixels).
    """
    _, h, w, _ = x.shape
    width = int(2 * np.ceil(radius) + 1)
    i = np.arange(width, dtype=np.float64)
    kernel = np.exp(-(i * i) / (2.0 * sigma * sigma))
    kernel /= kernel.sum()
    rad = np.deg2rad(angles)
    px, py = width * np.sin(rad), width * np.cos(rad)  # ImageMagick's point.x, point.y
    hyp = np.hypot(px, py)
    ox = np.ceil(i[None, :] * py[:, None] / hyp[:, None] - 0.5).astype(np.int64)  # (N, width)
    oy = np.ceil(i[None, :] * px[:, None] / hyp[:, None] - 0.5).astype(np.int64)
    rows, cols = np.arange(h), np.arange(w)
    out = np.zeros(x.shape, dtype=np.float64)
    for k in range(width):
        rr = np.clip(rows[None, :] + oy[:, k, None], 0, h - 1)[:, :, None]
        cc = np.clip(cols[None, :] + ox[:, k, None], 0, w - 1)[:, None, :]
        out += kernel[k] * _gather(x, rr, cc)
    return np.floor(out + 0.5)  # ClampToQuantum, then 8 bits: round to nearest


def _plasma_fractal(n: int, rng: np.random.Generator, wibbledecay: float) -> np.ndarray:
    """make_cifar_c.py's ``plasma_fractal(mapsize=32)`` (diamond-square), ``n`` maps at once,
    each scaled to ``[0, 1]``."""
    m = np.zeros((n, _S, _S), dtype=np.float64)
    step, wibble = _S, 100.0

    def wibbled_mean(a: np.ndarray) -> np.ndarray:
        return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)

    while step >= 2:
        half = step // 2
        corners = m[:, 0:_S:step, 0:_S:step]
        square = corners + np.roll(corners, -1, axis=1)
        square = square + np.roll(square, -1, axis=2)
        m[:, half:_S:step, half:_S:step] = wibbled_mean(square)
        dr = m[:, half:_S:step, half:_S:step]
        ul = m[:, 0:_S:step, 0:_S:step]
        lt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=2)
        m[:, 0:_S:step, half:_S:step] = wibbled_mean(lt)
        tt = dr + np.roll(dr, 1, axis=2) + ul + np.roll(ul, -1, axis=1)
        m[:, half:_S:step, 0:_S:step] = wibbled_mean(tt)
        step //= 2
        wibble /= wibbledecay
    m -= m.min(axis=(1, 2), keepdims=True)
    return m / m.max(axis=(1, 2), keepdims=True)


def _skimage_gaussian(x: np.ndarray, sigma: float, mode: str, truncate: float = 4.0) -> np.ndarray:
    """``skimage.filters.gaussian`` per image of a batch: ``scipy.ndimage.gaussian_filter`` over
    the two spatial axes only."""
    sigmas = (0, sigma, sigma, 0) if x.ndim == 4 else (0, sigma, sigma)
    return ndimage.gaussian_filter(x, sigma=sigmas, mode=mode, truncate=truncate)


def _defocus_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """make_cifar_c.py's ``disk``: an aliased disk on a 17x17 grid (radius <= 8), blurred by
    OpenCV's 3x3 ``GaussianBlur`` (float32, BORDER_REFLECT_101), cropped to its non-zero part
    (the zeros add nothing to the later filter)."""
    grid = np.arange(-8, 9)
    xx, yy = np.meshgrid(grid, grid)
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float32)
    disk /= disk.sum()
    taps = np.exp(-(np.arange(-1, 2, dtype=np.float64) ** 2) / (2 * alias_blur**2))
    taps = (taps / taps.sum()).astype(np.float32)
    disk = ndimage.correlate1d(disk, taps, axis=0, mode="mirror")
    disk = ndimage.correlate1d(disk, taps, axis=1, mode="mirror")
    rows, cols = np.flatnonzero(disk.any(axis=1)), np.flatnonzero(disk.any(axis=0))
    return disk[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def glass_shuffle(u: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """One pass of make_cifar_c.py's glass-blur pixel loop, on a batch ``u (N, 32, 32, C)``.

    The script visits ``h, w = 31 .. 2`` (descending) and runs
    ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` with ``(h', w') = (h + dy, w + dx)``,
    ``dx, dy in {-1, 0}``. On numpy views that copies ``x[h', w']`` into ``x[h, w]`` and leaves
    ``x[h', w']`` unchanged; every read is of a pixel not yet written in this pass, so the pass
    is one gather. ``dx, dy`` are ``(N, 30, 30)`` offsets for ``h, w = 2 .. 31``.
    """
    pos = np.arange(2, _S)
    out = u.copy()
    out[:, 2:, 2:] = _gather(u, pos[:, None] + dy, pos[None, :] + dx)
    return out


# -- the corruptions: (x uint8 (N, 32, 32, 3), constant, rng) -> float 0..255 or uint8 ----------
def _gaussian_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    f = x / 255.0
    return np.clip(f + rng.normal(size=f.shape, scale=c), 0, 1) * 255


def _shot_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    f = x / 255.0
    return np.clip(rng.poisson(f * c) / c, 0, 1) * 255


def _impulse_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    # skimage.util.random_noise(mode="s&p", amount=c, salt_vs_pepper=0.5), per channel value
    f = x / 255.0
    flipped = rng.random(f.shape) <= c
    salted = rng.random(f.shape) <= 0.5
    f[flipped & salted] = 1.0
    f[flipped & ~salted] = 0.0
    return np.clip(f, 0, 1) * 255


def _defocus_blur(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    kernel = _defocus_kernel(*c).astype(np.float64)
    out = ndimage.correlate(x / 255.0, kernel[None, :, :, None], mode="mirror")
    return np.clip(out, 0, 1) * 255


def _glass_blur(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    sigma, max_delta, iterations = c
    if max_delta != 1:  # glass_shuffle's single-gather argument holds for offsets in {-1, 0}
        raise ValueError("glass_blur is implemented for max_delta = 1 (the CIFAR constants)")
    u = (_skimage_gaussian(x / 255.0, sigma, "nearest") * 255).astype(np.uint8)
    for _ in range(iterations):
        d = rng.integers(-max_delta, max_delta, size=(len(x), _S - 2, _S - 2, 2))
        u = glass_shuffle(u, dx=d[..., 0], dy=d[..., 1])
    return np.clip(_skimage_gaussian(u / 255.0, sigma, "nearest"), 0, 1) * 255


def _motion_blur_corruption(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    angles = rng.uniform(-45, 45, size=len(x))
    return _motion_blur(x.astype(np.float64), c[0], c[1], angles)


def _zoom_blur(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    n = len(x)
    f = (x / 255.0).astype(np.float32).transpose(1, 2, 0, 3).reshape(_S, _S, n * 3)
    zooms = np.arange(*c)
    out = np.zeros_like(f)
    for z in zooms:
        out += _clipped_zoom_hwk(f, float(z))
    f = (f + out) / (len(zooms) + 1)
    return np.clip(f.reshape(_S, _S, n, 3).transpose(2, 0, 1, 3), 0, 1) * 255


def _snow(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    loc, scale, zoom, threshold, radius, sigma, mix = c
    f = x.astype(np.float32) / 255.0
    layer = rng.normal(size=(len(x), _S, _S), loc=loc, scale=scale)
    layer = _clipped_zoom(layer[..., None], zoom)
    layer[layer < threshold] = 0
    layer8 = (np.clip(layer, 0, 1) * 255).astype(np.uint8).astype(np.float64)
    angles = rng.uniform(-135, -45, size=len(x))
    layer = _motion_blur(layer8, radius, sigma, angles) / 255.0
    gray = f[..., 0:1] * 0.299 + f[..., 1:2] * 0.587 + f[..., 2:3] * 0.114  # cv2 RGB2GRAY
    f = mix * f + (1 - mix) * np.maximum(f, gray * 1.5 + 0.5)
    return np.clip(f + layer + np.rot90(layer, k=2, axes=(1, 2)), 0, 1) * 255


def _fog(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    strength, decay = c
    f = x / 255.0
    max_val = f.max(axis=(1, 2, 3), keepdims=True)
    f = f + strength * _plasma_fractal(len(x), rng, decay)[..., None]
    return np.clip(f * max_val / (max_val + strength), 0, 1) * 255


def _rgb2hsv(rgb: np.ndarray) -> np.ndarray:
    """``skimage.color.rgb2hsv`` (the formulas of scikit-image 0.14) on ``(..., 3)`` in [0, 1]."""
    v = rgb.max(axis=-1)
    delta = np.ptp(rgb, axis=-1)
    safe = np.where(delta == 0, 1.0, delta)
    s = np.where(delta == 0, 0.0, delta / np.where(v == 0, 1.0, v))
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    h = np.zeros_like(v)
    # later rules win where two channels share the maximum, as in scikit-image
    h = np.where(r == v, (g - b) / safe, h)
    h = np.where(g == v, 2.0 + (b - r) / safe, h)
    h = np.where(b == v, 4.0 + (r - g) / safe, h)
    h = np.where(delta == 0, 0.0, (h / 6.0) % 1.0)
    return np.stack([h, s, v], axis=-1)


def _hsv2rgb(hsv: np.ndarray) -> np.ndarray:
    """``skimage.color.hsv2rgb`` on ``(..., 3)``."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    hi = np.floor(h * 6)
    f = h * 6 - hi
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    sector = hi.astype(np.int64) % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    return np.stack([np.choose(sector, [c[k] for c in choices]) for k in range(3)], axis=-1)


def _brightness(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    hsv = _rgb2hsv(x / 255.0)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return np.clip(_hsv2rgb(hsv), 0, 1) * 255


def _contrast(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    f = x / 255.0
    means = f.mean(axis=(1, 2), keepdims=True)
    return np.clip((f - means) * c + means, 0, 1) * 255


def _affine_matrices(pts1: np.ndarray, pts2: np.ndarray) -> np.ndarray:
    """``cv2.getAffineTransform`` for a batch: ``M (N, 2, 3)`` with ``M @ [x, y, 1] = pts2``."""
    a = np.concatenate([pts1.astype(np.float64), np.ones((3, 1))], axis=1)  # (3, 3)
    return np.linalg.solve(a[None], pts2.astype(np.float64)).transpose(0, 2, 1)


def _warp_affine(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``cv2.warpAffine(img, M, (32, 32), borderMode=BORDER_REFLECT_101)``, INTER_LINEAR, per
    image: dst(x, y) = src(M^-1 (x, y)), source coordinates on OpenCV's 1/32-pixel grid."""
    full = np.concatenate([m, np.broadcast_to([0.0, 0.0, 1.0], (len(m), 1, 3))], axis=1)
    inv = np.linalg.inv(full)[:, :2]  # (N, 2, 3)
    xs = np.arange(_S, dtype=np.float64)

    def grid(row: np.ndarray) -> np.ndarray:
        # OpenCV: round(a * 1024) + round((b * y + c) * 1024) + 16, >> 5, on a 1/32 grid
        ax = np.rint(row[:, None, None, 0] * xs[None, None, :] * 1024)
        by = np.rint((row[:, None, None, 1] * xs[None, :, None] + row[:, None, None, 2]) * 1024)
        return np.floor((ax + by + 16) / 32).astype(np.int64)

    gx, gy = grid(inv[:, 0]), grid(inv[:, 1])  # (N, 32, 32) in 1/32 pixels
    fx = ((gx & 31) / 32).astype(np.float32)
    fy = ((gy & 31) / 32).astype(np.float32)
    return _bilinear(img, gy >> 5, gx >> 5, fy, fx, _reflect101).astype(np.float32)


def _elastic_transform(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    scale, smooth, jitter = c
    n = len(x)
    f = x.astype(np.float32) / 255.0
    center, size = np.float32(_S // 2), _S // 3
    pts1 = np.float32(
        [[center + size, center + size], [center + size, center - size], [center - size] * 2]
    )
    pts2 = pts1[None] + rng.uniform(-jitter, jitter, size=(n, 3, 2)).astype(np.float32)
    f = _warp_affine(f, _affine_matrices(pts1, pts2))
    dx = (_skimage_gaussian(rng.uniform(-1, 1, (n, _S, _S)), smooth, "reflect", 3) * scale).astype(
        np.float32
    )
    dy = (_skimage_gaussian(rng.uniform(-1, 1, (n, _S, _S)), smooth, "reflect", 3) * scale).astype(
        np.float32
    )
    # map_coordinates(order=1, mode="reflect") at (y + dy, x + dx)
    ys = np.arange(_S, dtype=np.float64)[None, :, None] + dy
    xs = np.arange(_S, dtype=np.float64)[None, None, :] + dx
    r0, c0 = np.floor(ys), np.floor(xs)
    out = _bilinear(f, r0.astype(np.int64), c0.astype(np.int64), ys - r0, xs - c0, _reflect)
    return np.clip(out, 0, 1) * 255


def _pixelate(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    small = int(_S * c)
    out = np.empty_like(x)
    for i, img in enumerate(x):
        pil = Image.fromarray(img).resize((small, small), Image.BOX)
        out[i] = np.asarray(pil.resize((_S, _S), Image.BOX))
    return out


def _jpeg_compression(x: np.ndarray, c: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    out = np.empty_like(x)
    for i, img in enumerate(x):
        buffer = BytesIO()
        Image.fromarray(img).save(buffer, "JPEG", quality=c)
        out[i] = np.asarray(Image.open(buffer).convert("RGB"))
    return out


_FUNCTIONS: dict[str, Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "glass_blur": _glass_blur,
    "motion_blur": _motion_blur_corruption,
    "zoom_blur": _zoom_blur,
    "snow": _snow,
    "fog": _fog,
    "brightness": _brightness,
    "contrast": _contrast,
    "elastic_transform": _elastic_transform,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
}


def corrupt(name: str, severity: int, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``x`` (uint8 ``(N, 32, 32, 3)`` RGB) with corruption ``name`` at ``severity`` 1..5.

    All randomness comes from ``rng``; the result is uint8 of the same shape.
    """
    if name not in _FUNCTIONS:
        reason = OMITTED.get(name, "not a CIFAR-C corruption")
        raise UsageError(f"cannot generate corruption {name!r}: {reason}")
    if severity not in (1, 2, 3, 4, 5):
        raise UsageError(f"severity must be 1..5, got {severity!r}")
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (_S, _S, 3):
        raise UsageError(f"x must be uint8 (N, 32, 32, 3), got {x.dtype} {x.shape}")
    if len(x) == 0:
        return x.copy()
    out = _FUNCTIONS[name](x, PARAMETERS[name][severity - 1], rng)
    return out if out.dtype == np.uint8 else _to_uint8(out)
