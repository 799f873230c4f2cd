"""Text cells: units, intervals, the ≈ mark, shared identity columns."""

from __future__ import annotations

import numpy as np
import pandas as pd

from calibench.leaderboard.aggregate import Leaderboard, MetricColumn
from calibench.leaderboard.cells import (
    TIE_MARK,
    display_rows,
    format_cell,
    interval_text,
    missing,
    shared_identity,
)

ECE = MetricColumn("ece", "ECE %", ("test", "ece"), False, binned=True)
NLL = MetricColumn("nll", "NLL", ("test", "nll"), False, percent=False)
NAN = float("nan")


def stats(key: str, mean: float, std: float, lo: float, hi: float) -> dict[str, float]:
    return {f"{key}_mean": mean, f"{key}_std": std, f"{key}_ci_low": lo, f"{key}_ci_high": hi}


def test_percent_and_plain_columns_in_their_units():
    row = pd.Series(
        {**stats("ece", 0.03125, 0.004, 0.021, 0.0405), **stats("nll", 0.5, NAN, 0.4, 0.6)}
    )
    assert format_cell(row, ECE) == "3.12 ± 0.40 [2.10, 4.05]"
    assert format_cell(row, ECE, ci=False, pm="+-") == "3.12 +- 0.40"
    assert format_cell(row, NLL) == "0.500 [0.400, 0.600]"  # one seed: no std
    assert interval_text(row, NLL) == "[0.400, 0.600]"


def test_missing_values_and_half_intervals():
    row = pd.Series({**stats("ece", NAN, NAN, 0.1, 0.2), **stats("nll", 0.5, 0.1, NAN, 0.6)})
    assert format_cell(row, ECE) == "–"
    assert interval_text(row, NLL) is None and format_cell(row, NLL) == "0.500 ± 0.100"
    row["nll_ci_low"] = float("-inf")
    assert interval_text(row, NLL) is None


def test_shared_identity_keeps_only_columns_equal_in_every_row():
    rows = [
        {"protocol": "smoke v1", "dataset": "cifar10", "backbone": "a", "deviations": "none"},
        {"protocol": "smoke v1", "dataset": "cifar10", "backbone": "b", "deviations": "none"},
    ]
    assert shared_identity(rows) == {
        "protocol": "smoke v1",
        "dataset": "cifar10",
        "deviations": "none",
    }
    assert shared_identity([]) == {}


def test_rank_marks_rows_tied_with_the_row_above():
    n = 4
    table = pd.DataFrame(
        {
            "rank": pd.array([1, 2, 3, None], dtype="Int64"),
            "tie_above": pd.array([None, True, False, None], dtype="boolean"),
            "loss": ["a", "b", "c", "d"],
            "dataset": ["cifar10"] * n,
            "backbone": ["resnet20"] * n,
            "protocol": ["smoke"] * n,
            "protocol_version": [1] * n,
            "n_seeds": [2, 2, 2, 0],
            "status": ["2 completed"] * 3 + ["0 completed, 1 failed"],
            "deviations": ["none"] * n,
            **{k: [0.01, 0.02, 0.03, NAN] for k in stats("ece", 0, 0, 0, 0)},
        }
    )
    board = Leaderboard(table, pd.DataFrame(), [ECE], "ece", 0)
    rows = display_rows(board)
    assert [r["rank"] for r in rows] == ["1", f"2{TIE_MARK}", "3", "–"]
    assert rows[3]["ECE %"] == "–" and rows[1]["status"] == "2 completed"


def test_missing_is_none_nan_or_pandas_na():
    assert all(missing(v) for v in (None, NAN, pd.NA, np.float64("nan")))
    assert not any(missing(v) for v in (0.0, 0, "", "x", float("inf"), False))
