"""Every loss against a baseline: Welch's t-test over seeds, Benjamini-Hochberg across losses."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from calibench.cli import main
from calibench.errors import UsageError
from calibench.leaderboard import build_leaderboard
from calibench.leaderboard.baseline import _bh, compare_to_baseline, render_baseline_markdown

ECE = {
    "ce": [0.150, 0.160, 0.170],
    "focal": [0.040, 0.045, 0.050],  # clearly better
    "brier": [0.152, 0.158, 0.171],  # the same
    "mmce": [0.30, 0.31, 0.33],  # clearly worse
    "poly1": [0.05],  # one seed: never called different
}


def metrics(ece: float, acc: float) -> dict:
    return {"test": {"acc": acc, "ece": ece, "adaece": ece, "nll": 0.5}, "ood": {}}


@pytest.fixture
def board(make_run, tmp_path):
    for loss, values in ECE.items():
        for seed, ece in enumerate(values):
            make_run(loss=loss, seed=seed, metrics=metrics(ece, 0.7 + 0.01 * seed))
    return build_leaderboard(tmp_path / "results", n_boot=0)


def bh_by_hand(p: list[float]) -> list[float]:
    """Benjamini-Hochberg from its definition: q_(i) = min_{j >= i} p_(j) m / j, capped at 1."""
    m, order = len(p), np.argsort(p)
    q = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p[i] * m / rank)
        q[i] = running
    return list(q)


def test_deltas_p_values_q_values_and_verdicts_match_an_independent_computation(board):
    frame = compare_to_baseline(board, "ce", ["ece", "acc"]).set_index(["metric", "loss"])
    assert sorted(frame.loc["ece"].index) == ["brier", "focal", "mmce", "poly1"]
    p = {}
    for loss in ("focal", "brier", "mmce"):
        row = frame.loc[("ece", loss)]
        assert row["delta"] == pytest.approx(np.mean(ECE[loss]) - np.mean(ECE["ce"]))
        expected = stats.ttest_ind(ECE[loss], ECE["ce"], equal_var=False).pvalue
        assert row["p"] == pytest.approx(expected)
        p[loss] = expected
    q = dict(zip(p, bh_by_hand(list(p.values())), strict=True))
    for loss in p:
        assert frame.loc[("ece", loss), "q"] == pytest.approx(q[loss])
    verdicts = frame.loc["ece", "verdict"].to_dict()
    assert verdicts == {"focal": "better", "brier": "≈", "mmce": "worse", "poly1": "≈"}
    assert np.isnan(frame.loc[("ece", "poly1"), "p"])
    # identical accuracies in every row: no difference anywhere
    assert set(frame.loc["acc", "verdict"]) == {"≈"}

    md = render_baseline_markdown(compare_to_baseline(board, "ce", ["ece"]), "ce")
    rows = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["brier", "focal", "mmce", "poly1"]  # name order, after the header
    focal = next(line for line in md.splitlines() if line.startswith("| focal"))
    assert "-11.50 pt ▲" in focal
    assert "ce (3 seeds): ECE 16.00 %" in md


def test_the_false_claim_rate_under_the_null_is_at_most_5_percent() -> None:
    """20 losses with the baseline's distribution, 3 seeds each, 4,000 simulated leaderboards:
    the share of leaderboards with any 'better'/'worse' claim (the FDR when every null is true)
    stays at or below 5 % (+ 3 standard errors)."""
    rng = np.random.default_rng(0)
    n_sims, n_losses, seeds = 4000, 20, 3
    base = rng.normal(0.15, 0.01, size=(n_sims, 1, seeds))
    others = rng.normal(0.15, 0.01, size=(n_sims, n_losses, seeds))
    p = stats.ttest_ind(others, np.broadcast_to(base, others.shape), axis=2, equal_var=False)
    any_claim = np.mean([min(_bh(list(row))) < 0.05 for row in p.pvalue])
    assert any_claim <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / n_sims)
    unadjusted = np.mean(p.pvalue < 0.05)
    assert 0.03 < unadjusted < 0.07  # each single Welch test holds its level


def test_bad_requests_are_usage_errors(board, tmp_path, capsys) -> None:
    with pytest.raises(UsageError, match="unknown metric"):
        compare_to_baseline(board, "ce", ["bogus"])
    with pytest.raises(UsageError, match="no completed 'nope' runs"):
        compare_to_baseline(board, "nope", ["ece"])
    results = str(tmp_path / "results")
    assert main(["leaderboard", "compare", "-r", results, "-m", "ece", "-b", "ce"]) == 0
    assert "| focal" in capsys.readouterr().out
    assert main(["leaderboard", "compare", "-r", results, "-m", "ece", "-b", "nope"]) == 2
