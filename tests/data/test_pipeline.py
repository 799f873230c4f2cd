"""DeviceLoader: per-sample crop+flip against a slow torchvision reference, seeding, eval mode."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

from calibench.data.datasets import Split
from calibench.data.pipeline import DeviceLoader, augment_batch
from calibench.errors import UsageError

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def _split(n: int, seed: int = 0) -> Split:
    """Random images; the label of image i is i, so every output can be traced to its source."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 32, 32, 3), generator=g, dtype=torch.uint8)
    return Split(x, torch.arange(n))


def _reference_crop(img_hwc: torch.Tensor, top: int, left: int, flip: bool, pad: int = 4):
    """torchvision's RandomCrop(size, padding=pad) then optional flip, for one image (CHW)."""
    img = img_hwc.permute(2, 0, 1)
    h, w = img.shape[1:]
    out = TF.crop(TF.pad(img, [pad], fill=0), top, left, h, w)
    return TF.horizontal_flip(out) if flip else out


def _reference_normalize(img_chw: torch.Tensor) -> torch.Tensor:
    return TF.normalize(img_chw.float() / 255, list(MEAN), list(STD))


def _epoch(loader: DeviceLoader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 6),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    pad=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_augment_batch_matches_per_sample_reference(b, h, w, pad, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (b, h, w, 3), generator=g, dtype=torch.uint8)
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=g)
    flips = torch.randint(0, 2, (b,), generator=g).bool()
    out = augment_batch(x, offsets, flips, pad)
    assert out.shape == x.shape and out.dtype == torch.uint8
    for i in range(b):
        top, left = offsets[i].tolist()
        ref = _reference_crop(x[i], top, left, bool(flips[i]), pad)
        assert torch.equal(out[i].permute(2, 0, 1), ref)


def test_train_outputs_are_crops_of_padded_sources_with_own_params() -> None:
    split = _split(24)
    loader = DeviceLoader(split, 8, "cpu", MEAN, STD, train=True, seed=5)
    candidates = [(t, left, f) for t in range(9) for left in range(9) for f in (False, True)]
    for xb, yb in loader:
        params = []
        for out, src in zip(xb, yb.tolist(), strict=True):
            matches = [
                p
                for p in candidates
                if torch.allclose(
                    out, _reference_normalize(_reference_crop(split.x[src], *p)), atol=1e-5
                )
            ]
            assert len(matches) == 1, "each output must be exactly one crop of its padded source"
            params.append(matches[0])
        assert len(set(params)) > 1, "crop and flip must be drawn per sample, not per batch"
        assert any(p[2] for p in params) and not all(p[2] for p in params)


def test_same_seed_and_epoch_replay_exactly() -> None:
    split = _split(40)
    a = DeviceLoader(split, 16, "cpu", MEAN, STD, train=True, seed=1)
    b = DeviceLoader(split, 16, "cpu", MEAN, STD, train=True, seed=1)
    xa0, ya0 = _epoch(a)
    xb0, yb0 = _epoch(b)
    assert torch.equal(xa0, xb0) and torch.equal(ya0, yb0)
    a.set_epoch(1)
    xa1, ya1 = _epoch(a)
    assert not torch.equal(ya0, ya1) and not torch.equal(xa0, xa1)
    resumed = DeviceLoader(split, 16, "cpu", MEAN, STD, train=True, seed=1)
    resumed.set_epoch(1)
    xr1, yr1 = _epoch(resumed)
    assert torch.equal(xa1, xr1) and torch.equal(ya1, yr1)
    other = DeviceLoader(split, 16, "cpu", MEAN, STD, train=True, seed=2)
    assert not torch.equal(_epoch(other)[1], ya0)


def test_train_shuffles_and_drops_last_partial_batch() -> None:
    split = _split(50)
    loader = DeviceLoader(split, 16, "cpu", MEAN, STD, train=True, seed=0)
    batches = list(loader)
    assert len(loader) == len(batches) == 3 and loader.num_samples == 48
    assert all(len(y) == 16 for _, y in batches)
    ys = torch.cat([y for _, y in batches])
    assert len(set(ys.tolist())) == 48 and not torch.equal(ys, torch.arange(48))
    keep = DeviceLoader(split, 16, "cpu", MEAN, STD, train=True, seed=0, drop_last=False)
    assert len(keep) == 4
    assert sorted(_epoch(keep)[1].tolist()) == list(range(50))


def test_train_without_augmentation_only_shuffles() -> None:
    split = _split(20)
    loader = DeviceLoader(split, 8, "cpu", MEAN, STD, train=True, seed=0, augment=False)
    for xb, yb in loader:
        for out, src in zip(xb, yb.tolist(), strict=True):
            ref = _reference_normalize(split.x[src].permute(2, 0, 1))
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("padding", "flip"), [(0, True), (4, False)])
def test_crop_and_flip_can_be_turned_off(padding: int, flip: bool) -> None:
    split = _split(16)
    loader = DeviceLoader(
        split, 16, "cpu", MEAN, STD, train=True, seed=0, padding=padding, flip=flip
    )
    xb, yb = next(iter(loader))
    src = split.x[yb].permute(0, 3, 1, 2)
    flipped = [
        torch.allclose(o, _reference_normalize(s.flip(-1)), atol=1e-5)
        for o, s in zip(xb, src, strict=True)
    ]
    same = [
        torch.allclose(o, _reference_normalize(s), atol=1e-5) for o, s in zip(xb, src, strict=True)
    ]
    if padding == 0:  # flip only: every output is its source, half of them mirrored
        assert (
            all(f or k for f, k in zip(flipped, same, strict=True)) and any(flipped) and any(same)
        )
    else:  # crop only: never mirrored, some shifted
        assert not any(f and not k for f, k in zip(flipped, same, strict=True)) and not all(same)


def test_eval_mode_keeps_order_and_last_batch_without_augmentation() -> None:
    split = _split(21)
    loader = DeviceLoader(split, 8, "cpu", MEAN, STD, train=False)
    batches = list(loader)
    assert [len(y) for _, y in batches] == [8, 8, 5] and len(loader) == 3
    x, y = _epoch(loader)
    assert torch.equal(y, torch.arange(21))
    ref = torch.stack([_reference_normalize(img.permute(2, 0, 1)) for img in split.x])
    torch.testing.assert_close(x, ref, atol=1e-5, rtol=0)
    loader.set_epoch(3)
    assert torch.equal(_epoch(loader)[0], x)


def test_output_layout() -> None:
    split = _split(10)
    xb, yb = next(iter(DeviceLoader(split, 4, "cpu", MEAN, STD, train=True, seed=0)))
    assert xb.shape == (4, 3, 32, 32) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert xb.is_contiguous(memory_format=torch.channels_last)
    xc, _ = next(iter(DeviceLoader(split, 4, "cpu", MEAN, STD, train=False, channels_last=False)))
    assert xc.is_contiguous()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"mean": (0.5, 0.5)}, "3 per-channel"),
        ({"std": (0.2, 0.0, 0.2)}, "std must be positive"),
        ({"seed": -1}, "seed"),
        ({"device": "gpu0"}, "invalid device"),
    ],
)
def test_bad_arguments(kwargs, message) -> None:
    args = {"batch_size": 4, "device": "cpu", "mean": MEAN, "std": STD, "train": True, "seed": 0}
    args.update(kwargs)
    with pytest.raises(UsageError, match=message):
        DeviceLoader(_split(4), **args)
    with pytest.raises(UsageError, match="epoch"):
        DeviceLoader(_split(4), 4, "cpu", MEAN, STD, train=True).set_epoch(-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_epoch_has_no_host_sync() -> None:
    split = _split(300)
    loader = DeviceLoader(split, 64, "cuda", MEAN, STD, train=True, seed=0)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for xb, _ in loader:
            assert xb.is_cuda
    finally:
        torch.cuda.set_sync_debug_mode("default")
