"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
CIFAR10_NPZ = SHARED_DATA / "cifar10.npz"

# Tests never reach the network and never pick up a user's plugins or data unless they ask to.
os.environ.setdefault("CALIBENCH_DATA", str(REPO_ROOT / ".pytest-no-data"))


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A test that sets torch's thread count (``execute_run(threads=...)`` does) must not change
    it for the tests after it: CPU results are bit-identical only for one thread count."""
    import sys

    torch = sys.modules.get("torch")
    saved = torch.get_num_threads() if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is not None and saved is not None and torch.get_num_threads() != saved:
        torch.set_num_threads(saved)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def cifar10_npz() -> Path:
    if not CIFAR10_NPZ.exists():
        pytest.skip(f"real CIFAR-10 npz not found at {CIFAR10_NPZ}")
    return CIFAR10_NPZ


@pytest.fixture(scope="session")
def shared_data_dir(cifar10_npz: Path) -> Path:
    return cifar10_npz.parent


@pytest.fixture(autouse=True)
def _no_dataset_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may touch the network: every dataset downloader fails at once."""
    from calibench.data import sources

    def no_network(root: Path) -> None:
        raise ConnectionError("network access is disabled in tests")

    for name in list(sources.DOWNLOADERS):
        monkeypatch.setitem(sources.DOWNLOADERS, name, no_network)


@pytest.fixture(scope="session")
def signal_at_marker():
    """``send(child, marker, signum)``: wait until the subprocess ``child`` writes the file
    ``marker`` (failing if it exits first or takes over ``within`` seconds), then send it
    ``signum`` (the kill-and-resume tests)."""
    import signal
    import time

    def send(child, marker: Path, signum: int = signal.SIGKILL, within: float = 240.0) -> None:
        deadline = time.monotonic() + within
        while not marker.exists():
            assert child.poll() is None, "the training subprocess exited before its marker"
            assert time.monotonic() < deadline, "the training subprocess never reached its marker"
            time.sleep(0.05)
        os.kill(child.pid, signum)

    return send
