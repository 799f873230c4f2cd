"""The device-resident input pipeline: no DataLoader, no workers, no host syncs.

A :class:`DeviceLoader` moves a split's uint8 images to the device once (CIFAR train is 138 MB).
Each epoch then runs entirely on the device:

- a seeded shuffle (``torch.randperm`` with a ``torch.Generator`` on the device, seeded from
  ``(seed, epoch)``, so a resumed epoch replays exactly);
- per-sample augmentation, as torchvision's ``RandomCrop(32, padding=4)`` (zero padding) followed
  by ``RandomHorizontalFlip()``: each image draws its own crop offset and flip. It is done batched
  by index arithmetic (one gather), because torchvision's batched v2 transforms draw a single
  random parameter for the whole batch;
- normalisation ``(x / 255 - mean) / std`` in float32 and ``channels_last`` output.

Eval mode (``train=False``) keeps the split order, does no augmentation and keeps the last
partial batch. The same code runs on CPU.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from calibench.data.datasets import Split
from calibench.errors import UsageError

__all__ = ["DeviceLoader", "augment_batch", "epoch_generator"]


def epoch_generator(seed: int, epoch: int, device: torch.device | str) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` whose seed is derived from ``(seed, epoch)``."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(2, np.uint32)
    g = torch.Generator(device=torch.device(device))
    g.manual_seed((int(state[0]) << 31) ^ int(state[1]))
    return g


def augment_batch(
    x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int = 4
) -> torch.Tensor:
    """Crop each image of ``x`` (B, H, W, C) from its zero-padded version, flipping some.

    ``offsets`` (B, 2) int64 in ``[0, 2 * padding]`` give the top-left (row, column) of each crop
    in the padded image; ``flips`` (B,) bool flip the crop left-right. Returns (B, H, W, C), the
    dtype of ``x``; one gather, no loop over samples.
    """
    b, h, w, _ = x.shape
    padded = x.new_zeros(b, h + 2 * padding, w + 2 * padding, x.shape[3])
    padded[:, padding : padding + h, padding : padding + w] = x
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = offsets[:, :1] + ar_h  # (B, H)
    cols = offsets[:, 1:] + torch.where(flips[:, None], w - 1 - ar_w, ar_w)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]]


def _check_positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value!r}")
    return value


def _channel_stats(name: str, values: Sequence[float], channels: int) -> tuple[float, ...]:
    try:
        stats = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be {channels} numbers, got {values!r}") from None
    if len(stats) != channels:
        raise UsageError(f"{name} must have {channels} per-channel values, got {len(stats)}")
    return stats


class DeviceLoader:
    """Batches of ``(x float32 (B, 3, H, W) normalised, y int64 (B,))`` from a device-resident split.

    ``train=True``: a seeded shuffle each epoch and (if ``augment``) per-sample random crop
    (padding 4, zero fill) and horizontal flip; the last partial batch is dropped unless
    ``drop_last=False``. ``padding=0`` turns the crop off and ``flip=False`` the flip.
    ``train=False``: split order, no augmentation, every image once.
    Call :meth:`set_epoch` before each epoch; all randomness of epoch ``e`` comes from a
    generator seeded by ``(seed, e)``.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        device: torch.device | str,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        train: bool,
        seed: int = 0,
        augment: bool = True,
        drop_last: bool | None = None,
        channels_last: bool = True,
        padding: int = 4,
        flip: bool = True,
    ) -> None:
        if not isinstance(split, Split):
            raise UsageError(f"DeviceLoader needs a calibench Split, got {type(split).__name__}")
        self.batch_size = _check_positive_int("batch_size", batch_size)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
        if not isinstance(padding, int) or padding < 0:
            raise UsageError(f"padding must be a non-negative integer, got {padding!r}")
        channels = split.x.shape[3]
        mean_t = _channel_stats("mean", mean, channels)
        std_t = _channel_stats("std", std, channels)
        if min(std_t) <= 0:
            raise UsageError(f"std must be positive, got {std_t}")
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError):
            raise UsageError(f"invalid device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from None
        self.train = bool(train)
        self.seed = seed
        self.augment = bool(augment) and self.train
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.channels_last = bool(channels_last)
        self.padding = padding
        self.flip = bool(flip)
        self.epoch = 0
        self.x = split.x.to(self.device)
        self.y = split.y.to(self.device)
        self._scale = (1.0 / (255.0 * torch.tensor(std_t))).to(self.device)
        self._shift = (torch.tensor(mean_t) / torch.tensor(std_t)).to(self.device)

    @property
    def num_samples(self) -> int:
        """Images yielded per epoch."""
        n = len(self.y)
        return n - n % self.batch_size if self.drop_last else n

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle and augmentation the next iteration replays."""
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise UsageError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = epoch

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, C) -> float32 (B, C, H, W) normalised, channels_last if configured."""
        out = (x.float() * self._scale - self._shift).permute(0, 3, 1, 2)
        return out if self.channels_last else out.contiguous()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        order = offsets = flips = None
        if self.train:
            g = epoch_generator(self.seed, self.epoch, self.device)
            order = torch.randperm(n, generator=g, device=self.device)
            if self.augment:
                offsets = torch.randint(
                    0, 2 * self.padding + 1, (n, 2), generator=g, device=self.device
                )
                flips = torch.randint(0, 2, (n,), generator=g, device=self.device).bool()
                if not self.flip:
                    flips = torch.zeros_like(flips)
        for start in range(0, self.num_samples, self.batch_size):
            stop = min(start + self.batch_size, n)
            if order is None:
                xb, yb = self.x[start:stop], self.y[start:stop]
            else:
                idx = order[start:stop]
                xb, yb = self.x[idx], self.y[idx]
            if offsets is not None and flips is not None:
                xb = augment_batch(xb, offsets[start:stop], flips[start:stop], self.padding)
            yield self.normalize(xb), yb
