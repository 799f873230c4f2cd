"""Shared fixtures: official-format file writers and the real CIFAR-10 npz, if present."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
REAL_CIFAR10_NPZ = REPO.parent / "shared" / "data" / "cifar10.npz"


def _load_writers() -> ModuleType:
    path = REPO / "tests" / "fixtures" / "official_formats.py"
    spec = importlib.util.spec_from_file_location("calibench_test_official_formats", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WRITERS = _load_writers()


@pytest.fixture
def writers() -> ModuleType:
    return WRITERS


@pytest.fixture(autouse=True)
def _isolated_data_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the user's data folder (downloads are off suite-wide: tests/conftest.py)."""
    monkeypatch.setenv("CALIBENCH_DATA", str(tmp_path / "env-data-root"))


@pytest.fixture(scope="session")
def real_cifar10_root() -> Path:
    if not REAL_CIFAR10_NPZ.is_file():
        pytest.skip(f"real CIFAR-10 not available at {REAL_CIFAR10_NPZ}")
    return REAL_CIFAR10_NPZ.parent
