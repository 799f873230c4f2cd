"""Entry-point plugins, installed for real with pip into a temporary folder.

Each test runs the ``calibench`` CLI in a subprocess with ``PYTHONPATH`` pointing at the folder,
so discovery goes through ``importlib.metadata`` exactly as for a user's ``pip install``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "plugins"


def _pip_install(src: Path, target: Path, tmp: Path) -> None:
    work = tmp / f"src-{src.name}"
    shutil.copytree(
        src, work
    )  # build in a copy: pip writes build/ and *.egg-info beside the source
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--disable-pip-version-check",
        "--quiet",
        "--target",
        str(target),
        str(work),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def good_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("good")
    site = tmp / "site"
    _pip_install(FIXTURES / "good_plugin", site, tmp)
    return site


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("broken")
    site = tmp / "site"
    _pip_install(FIXTURES / "broken_plugin", site, tmp)
    return site


def _run(args: list[str], *sites: Path, env_extra: dict | None = None, code: str | None = None):
    env = dict(os.environ)
    env.pop("CALIBENCH_DISABLE_PLUGINS", None)
    env["PYTHONPATH"] = os.pathsep.join(str(s) for s in sites)
    env.update(env_extra or {})
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "calibench", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_plugin_loss_is_listed_with_its_distribution(good_site: Path) -> None:
    done = _run(["list", "losses", "--format", "json"], good_site)
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)}
    assert "ce" in rows and rows["ce"]["source"] == {"type": "builtin"}
    toy = rows["toy-tempered-ce"]
    assert toy["source"]["type"] == "plugin"
    assert toy["source"]["distribution"] == "calibench-good-plugin"
    assert toy["source"]["version"] == "1.2.3"
    assert toy["summary"] == "CE on logits / temperature"
    assert toy["defaults"] == {"temperature": 2.0}
    plain = rows["toy-plain"]
    assert plain["source"]["distribution"] == "calibench-good-plugin"
    assert plain["defaults"] == {"scale": 1.0}
    assert done.stderr == ""


def test_plugin_loss_is_created_like_a_builtin(good_site: Path) -> None:
    code = (
        "import torch, calibench\n"
        "loss = calibench.create_loss('toy-tempered-ce', temperature=4.0)\n"
        "z = torch.tensor([[4.0, 0.0]]); y = torch.tensor([0])\n"
        "ref = torch.nn.functional.cross_entropy(z / 4.0, y)\n"
        "assert torch.allclose(loss(z, y), ref)\n"
        "q = calibench.create_loss('calibench-good-plugin:toy-plain')\n"
        "assert q(z, y).shape == ()\n"
        "e = calibench.get_registry('losses').get('calibench_good_plugin:toy-tempered-ce')\n"
        "print(e.source.label())\n"
    )
    done = _run([], good_site, code=code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "calibench-good-plugin 1.2.3"


def test_discovery_can_be_disabled(good_site: Path) -> None:
    done = _run(
        ["list", "losses", "--format", "json"],
        good_site,
        env_extra={"CALIBENCH_DISABLE_PLUGINS": "1"},
    )
    assert done.returncode == 0, done.stderr
    names = {r["name"] for r in json.loads(done.stdout)}
    assert "ce" in names and "toy-tempered-ce" not in names


def test_broken_plugin_never_breaks_listing(good_site: Path, broken_site: Path) -> None:
    done = _run(["list", "losses", "--format", "json"], good_site, broken_site)
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)}
    assert rows["ce"]["source"] == {"type": "builtin"}, "the built-in keeps its name"
    assert "toy-tempered-ce" in rows, "a good plugin still works beside a broken one"
    assert "calibench-broken-plugin:ce" in rows, "the clashing entry is reachable only qualified"
    warning_lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(warning_lines) == 1, done.stderr
    assert warning_lines[0].startswith("warning: ") and "calibench plugins" in warning_lines[0]


def test_plugins_command_reports_errors(good_site: Path, broken_site: Path) -> None:
    done = _run(["plugins", "--format", "json"], good_site, broken_site)
    assert done.returncode == 0, done.stderr
    by_name = {s["name"]: s for s in json.loads(done.stdout)}
    assert by_name["toy"]["status"] == "ok"
    assert by_name["toy"]["registered"] == ["losses:toy-tempered-ce"]
    assert by_name["broken"]["status"] == "error"
    assert "calibench_dependency_that_does_not_exist" in by_name["broken"]["error"]
    assert by_name["clash"]["status"] == "error"
    assert "clashes with a built-in" in by_name["clash"]["error"]
    table = _run(["plugins"], good_site, broken_site, env_extra={"COLUMNS": "250"})
    assert table.returncode == 0, table.stderr
    assert table.stderr == "", "the plugins command reports errors in its table, not as a warning"
    assert "error" in table.stdout and "calibench-broken-plugin" in table.stdout


def test_builtin_keeps_name_when_plugin_clashes(broken_site: Path) -> None:
    code = (
        "import warnings, torch, calibench\n"
        "warnings.simplefilter('ignore')\n"
        "loss = calibench.create_loss('ce')\n"
        "print(type(loss).__module__)\n"
    )
    done = _run([], broken_site, code=code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "calibench.losses.ce"
