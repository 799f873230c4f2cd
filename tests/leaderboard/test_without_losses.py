"""The leaderboard needs no loss: every column and interval comes from the saved files.

Each check runs in a subprocess so that ``sys.modules`` and plugin discovery start clean. A
plugin loss's runs keep every column and interval once the plugin is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GOOD_PLUGIN = REPO / "tests" / "fixtures" / "plugins" / "good_plugin"
PLUGIN_LOSS = "toy-tempered-ce"
PLUGIN_SOURCE = {"type": "plugin", "distribution": "calibench-good-plugin", "version": "1.2.3"}


def python(code: str, *, site: Path | None = None, disable_plugins: bool = True):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("CALIBENCH_DISABLE_PLUGINS", None)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    if disable_plugins:
        env["CALIBENCH_DISABLE_PLUGINS"] = "1"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )


def leaderboard_json(results: Path, n_boot: int = 100) -> dict:
    code = (
        "import sys\n"
        "from calibench.cli import main\n"
        f"code = main(['leaderboard', '-r', {str(results)!r}, '--format', 'json', "
        f"'--bootstrap', '{n_boot}'])\n"
        "assert code == 0, code\n"
        "assert 'calibench.losses' not in sys.modules, 'the leaderboard imported the losses'\n"
    )
    done = python(code)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_every_column_and_interval(doc: dict, loss: str) -> dict:
    keys = [c["key"] for c in doc["columns"]]
    assert {"acc", "ece", "adaece", "nll", "ece_ts"} <= set(keys)
    assert any(k.endswith("_auroc") for k in keys) and any(k.endswith("_fpr95") for k in keys)
    (row,) = [r for r in doc["rows"] if r["loss"] == loss]
    for key in keys:
        for stat in ("mean", "ci_low", "ci_high"):
            assert row[f"{key}_{stat}"] is not None, f"{key}_{stat}"
        assert row[f"{key}_ci_low"] <= row[f"{key}_ci_high"], key
    return row


def test_importing_and_building_the_leaderboard_never_imports_a_loss(make_run, tmp_path):
    for seed in range(2):
        make_run(loss="ce", seed=seed, ood_sets=["gaussian"])
    code = (
        "import sys\n"
        "from calibench.leaderboard import FORMATS, build_leaderboard, render\n"
        "assert 'calibench.losses' not in sys.modules\n"
        f"board = build_leaderboard({str(tmp_path / 'results')!r}, n_boot=20)\n"
        "for fmt in FORMATS:\n"
        "    render(board, fmt)\n"
        "assert 'calibench.losses' not in sys.modules, sorted(sys.modules)\n"
    )
    done = python(code)
    assert done.returncode == 0, done.stderr


def test_runs_of_an_unavailable_plugin_loss_keep_every_column_and_interval(make_run, tmp_path):
    for seed in range(2):
        make_run(
            loss=PLUGIN_LOSS,
            params={"temperature": 3.0},
            seed=seed,
            ood_sets=["gaussian"],
            loss_source=PLUGIN_SOURCE,
        )
    gone = python(f"import calibench; calibench.create_loss({PLUGIN_LOSS!r})")
    assert gone.returncode != 0 and "toy-tempered-ce" in gone.stderr  # the plugin is unavailable
    doc = leaderboard_json(tmp_path / "results")
    (label,) = [r["loss"] for r in doc["rows"]]
    assert label.startswith(PLUGIN_LOSS)
    assert assert_every_column_and_interval(doc, label)["n_seeds"] == 2


def _install_plugin(tmp: Path) -> Path:
    work, site = tmp / "src", tmp / "site"
    shutil.copytree(GOOD_PLUGIN, work)  # pip writes build/ and *.egg-info beside the source
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation"]
    cmd += ["--no-index", "--disable-pip-version-check", "--quiet", "--target", str(site)]
    done = subprocess.run([*cmd, str(work)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return site


@pytest.mark.slow
def test_real_runs_of_a_plugin_loss_rank_after_the_plugin_is_uninstalled(tmp_path, shared_data_dir):
    site, results = _install_plugin(tmp_path), tmp_path / "results"
    train = (
        "import sys\n"
        "from calibench.cli import main\n"
        "sys.exit(main(['run', '--protocol', 'smoke', '--losses', 'toy-tempered-ce', "
        "'--backbone', 'resnet20', '--seeds', '0,1', '--epochs', '1', '--train-subset', '200', "
        f"'--device', 'cpu', '--no-live', '--results', {str(results)!r}, "
        f"'--data-root', {str(shared_data_dir)!r}]))\n"
    )
    done = python(train, site=site, disable_plugins=False)
    assert done.returncode == 0, done.stdout + done.stderr
    shutil.rmtree(site)  # uninstalled; discovery is off as well
    doc = leaderboard_json(results)
    plugin_rows = [r for r in doc["rows"] if r["loss"].startswith(PLUGIN_LOSS)]
    assert len(plugin_rows) == 1 and plugin_rows[0]["n_seeds"] == 2
    row = assert_every_column_and_interval(doc, plugin_rows[0]["loss"])
    records = [json.loads(p.read_text()) for p in results.rglob("record.json")]
    plugin = [r for r in records if r["spec"]["loss"] == PLUGIN_LOSS]
    assert plugin[0]["loss"]["source"]["type"] == "plugin"
    accs = [r["metrics"]["test"]["acc"] for r in plugin]
    assert row["acc_mean"] == pytest.approx(sum(accs) / 2, rel=1e-12)
