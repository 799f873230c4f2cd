"""Runner test helpers: a fake protocol and a fake engine that writes valid records quickly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from calibench import records
from calibench.runner import execute
from calibench.runner.execute import RunOutcome, describe
from calibench.spec import RunSpec


@dataclass(frozen=True)
class FakeProtocol:
    name: str = "smoke"
    version: int = 1
    content_hash: str = "sha256:" + "0" * 64


def completed_record(spec: RunSpec, acc: float = 0.5) -> dict[str, Any]:
    return records.build_record(
        spec,
        status="completed",
        metrics={"test": {"acc": acc, "ece": 0.1}},
        loss_source={"type": "builtin"},
        code={"calibench_version": "0", "git_sha": None, "git_dirty": None},
        env={k: None for k in ("python", "torch", "cuda", "timm", "torch_uncertainty", "device")},
        epoch=1,
    )


class FakeEngine:
    """Stands in for trainer -> evaluation -> records; ``fail`` / ``diverge`` pick run outcomes."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: set[int] = set()
        self.diverge: set[int] = set()

    def __call__(self, spec: RunSpec, directory: Path, **kwargs: Any) -> RunOutcome:
        self.calls.append(spec.run_id())
        if spec.seed in self.fail:
            raise RuntimeError(f"boom on seed {spec.seed}")
        if spec.seed in self.diverge:
            execute.write_status_record(
                spec, directory, "diverged", "non-finite loss at epoch 1", epoch=1
            )
            return RunOutcome(
                directory.name, describe(spec), "diverged", "non-finite loss at epoch 1", epochs=1
            )
        records.write_record(directory, completed_record(spec))
        return RunOutcome(directory.name, describe(spec), "completed", epochs=1, img_per_s=100.0)


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    fake = FakeEngine()
    monkeypatch.setattr(execute, "train_and_record", fake)
    return fake


@pytest.fixture
def protocol() -> FakeProtocol:
    return FakeProtocol()


def write_tiny_protocol(directory: Path) -> Path:
    """A ``tiny`` protocol (256 training images, 2 epochs, 100 val, 200 test/OOD images, the
    shift grid on 10 images per cell) in ``directory``, with its content hash, for end-to-end
    runner tests on CPU."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    from calibench.protocols import compute_content_hash, load_protocol

    source = load_protocol("smoke").path
    content = tomllib.loads(Path(source).read_text())
    content.update(name="tiny", description="runner tests: tiny end-to-end runs on CPU")
    content["data"].update(val_size=100, train_subset=256)
    content["train"].update(epochs=2, batch_size=64)
    content["eval"].update(batch_size=200, max_images=200, ood=["gaussian"], shift_max_images=10)
    content["content_hash"] = compute_content_hash(content)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tiny.toml"
    path.write_text(_toml(content))
    return path


def _toml(content: dict[str, Any], prefix: str = "") -> str:
    import json

    scalars = [f"{k} = {json.dumps(v)}" for k, v in content.items() if not isinstance(v, dict)]
    tables = [
        f"\n[{prefix}{k}]\n" + _toml(v, f"{prefix}{k}.")
        for k, v in content.items()
        if isinstance(v, dict)
    ]
    return "\n".join(scalars) + "\n" + "".join(tables)


@pytest.fixture(scope="session")
def tiny_protocol(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path):
    """Registers the ``tiny`` protocol for this process and every process it starts."""
    import os

    from calibench.protocols import PROTOCOLS_ENV, load_protocol

    directory = tmp_path_factory.mktemp("protocols")
    write_tiny_protocol(directory)
    old = os.environ.get(PROTOCOLS_ENV)
    os.environ[PROTOCOLS_ENV] = str(directory)
    try:
        yield load_protocol("tiny")
    finally:
        if old is None:
            os.environ.pop(PROTOCOLS_ENV, None)
        else:
            os.environ[PROTOCOLS_ENV] = old
