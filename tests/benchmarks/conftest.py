"""The benchmark scripts live in ``benchmarks/`` (not a package); make them importable."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO_ROOT / "benchmarks"
CIFAR10_NPZ = REPO_ROOT.parent / "shared" / "data" / "cifar10.npz"

if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))


@pytest.fixture(scope="session")
def real_cifar10() -> Path:
    if not CIFAR10_NPZ.exists():
        pytest.skip(f"real CIFAR-10 npz not found at {CIFAR10_NPZ}")
    return CIFAR10_NPZ
