"""The PNG figures: written atomically, valid PNG, robust to empty bins and constant scores."""

from __future__ import annotations

import pytest
import torch

from calibench.errors import UsageError
from calibench.plots import ood_histogram, reliability_diagram

PNG = b"\x89PNG\r\n\x1a\n"


def test_reliability_diagram(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 10, generator=g) * 4
    labels = torch.randint(0, 10, (500,), generator=g)
    path = reliability_diagram(
        torch.softmax(logits, 1), labels, tmp_path / "sub" / "rel.png", title="t"
    )
    assert path.read_bytes()[:8] == PNG
    assert [p.name for p in path.parent.iterdir()] == ["rel.png"]  # no temporary left behind


def test_reliability_diagram_with_one_confident_bin(tmp_path) -> None:
    probs = torch.tensor([[1.0, 0.0]] * 5)
    path = reliability_diagram(probs, torch.tensor([0, 0, 0, 1, 0]), tmp_path / "r.png")
    assert path.read_bytes()[:8] == PNG


def test_reliability_diagram_validates(tmp_path) -> None:
    with pytest.raises(UsageError):
        reliability_diagram(torch.randn(3, 2), torch.zeros(3, dtype=torch.long), tmp_path / "x.png")


def test_ood_histogram(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    sid = {
        "msp": torch.rand(200, generator=g, dtype=torch.float64),
        "energy": torch.randn(200, generator=g),
    }
    sood = {"msp": torch.full((100,), 0.5, dtype=torch.float64), "energy": torch.zeros(100)}
    metrics = {"msp": {"auroc": 0.5, "fpr95": 0.9}}
    path = ood_histogram(sid, sood, tmp_path / "ood.png", ood_name="svhn", metrics=metrics)
    assert path.read_bytes()[:8] == PNG
    constant = ood_histogram(
        {"energy": torch.ones(3)}, {"energy": torch.ones(3)}, tmp_path / "c.png"
    )
    assert constant.read_bytes()[:8] == PNG
