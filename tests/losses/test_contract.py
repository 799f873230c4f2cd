"""The loss contract, checked for every registered loss (new ones are picked up automatically)."""

from __future__ import annotations

import importlib.util
import math
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from calibench import create_loss, list_losses
from calibench.errors import UsageError
from calibench.losses.base import CalibrationLoss, predictive_logits_of
from calibench.registry import get_registry

from .conftest import random_batch

LOSS_NAMES = [entry.qualified_name for entry in list_losses()]
BUILTIN_NAMES = [e.qualified_name for e in list_losses() if e.source.is_builtin]
#: Batch terms that are not means over the batch: their value changes when the batch is repeated.
BATCH_SIZE_DEPENDENT = {"mmce"}  # MMCE_w as Mukhoti et al. code it scales like 1/N
N, K = 8, 5
PLAIN_PLUGIN = (
    Path(__file__).parents[1] / "fixtures/plugins/good_plugin/calibench_good_plugin/plain.py"
)


def _numeric_params(name: str) -> list[str]:
    defaults = get_registry("losses").get(name).defaults
    return [
        p for p, v in defaults.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]


def _batch(seed: int = 0, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    return random_batch(seed, N, K, scale, dtype=torch.float32)


def test_every_issue_loss_is_registered() -> None:
    expected = {
        "ce", "ls", "focal", "flsd53", "brier", "mmce", "logitnorm", "mdca", "dual-focal",
        "poly1", "confidence-penalty", "iq-tv", "iq-chi2", "iq-rkl", "iq-fkl", "iq-hellinger",
        "iq-js", "iq-ref-chi", "iq-ref-hellinger", "iq-ref-js", "iq-ref-klfix", "mmce-unweighted",
        "mbls", "adafocal", "cals", "acls", "maxsup",
    }  # fmt: skip
    assert expected <= set(LOSS_NAMES)
    for name in expected:
        entry = get_registry("losses").get(name)
        assert entry.summary and entry.reference, name


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_docstring_states_formula_parameters_and_reference(name: str) -> None:
    doc = get_registry("losses").get(name).factory.__doc__ or ""
    assert "Parameters" in doc and "Reference" in doc, name
    for param in get_registry("losses").get(name).defaults:
        assert param in doc, f"{name}: parameter {param} is not documented"


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_returns_finite_float32_batch_mean(name: str) -> None:
    loss = create_loss(name)
    assert isinstance(loss, nn.Module)
    logits, targets = _batch()
    value = loss(logits, targets)
    assert value.dim() == 0 and value.dtype == torch.float32 and torch.isfinite(value)
    if name in BATCH_SIZE_DEPENDENT:
        return
    # a mean (not a sum): the loss of the batch repeated twice is the loss of the batch
    doubled = loss(torch.cat([logits, logits]), torch.cat([targets, targets]))
    torch.testing.assert_close(doubled, value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_probabilities_are_a_distribution(name: str) -> None:
    loss = create_loss(name)
    logits, _ = _batch(1, scale=10.0)
    p = loss.probabilities(logits)
    assert p.shape == (N, K) and p.dtype == torch.float32
    assert bool((p >= 0).all())
    torch.testing.assert_close(p.sum(dim=1), torch.ones(N), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", BUILTIN_NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_probabilities_are_exactly_softmax_of_predictive_logits(
    name: str, dtype: torch.dtype
) -> None:
    loss = create_loss(name)
    assert type(loss).probabilities is CalibrationLoss.probabilities, (
        f"{name} overrides probabilities; override predictive_logits instead"
    )
    logits, _ = _batch(5, scale=10.0)
    s = loss.predictive_logits(logits.to(dtype))
    assert s.shape == (N, K) and s.dtype == dtype and bool(torch.isfinite(s).all())
    assert torch.equal(torch.softmax(s, dim=-1), loss.probabilities(logits.to(dtype)))
    assert torch.equal(predictive_logits_of(loss, logits.to(dtype)), s)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_predictive_logits_of_any_loss_match_its_probabilities(name: str) -> None:
    """Plugins included: a plugin with only ``probabilities`` gets ``log(probabilities)``."""
    loss = create_loss(name)
    logits, _ = _batch(6)
    s = predictive_logits_of(loss, logits)
    assert s.shape == (N, K) and s.dtype == torch.float32
    if callable(getattr(loss, "probabilities", None)):
        torch.testing.assert_close(
            torch.softmax(s, dim=-1), loss.probabilities(logits).float(), rtol=1e-6, atol=1e-7
        )


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_float64_in_float64_out_and_half_precision_upcast(name: str) -> None:
    loss = create_loss(name)
    logits, targets = _batch(7)
    for dtype, out in [(torch.float64, torch.float64), (torch.float32, torch.float32),
                       (torch.bfloat16, torch.float32), (torch.float16, torch.float32)]:  # fmt: skip
        z = logits.to(dtype)
        assert loss(z, targets).dtype == out, (name, dtype)
        assert loss.predictive_logits(z).dtype == out, (name, dtype)
        assert loss.probabilities(z).dtype == out, (name, dtype)
    # float64 is computed in float64, not rounded through float32 and cast back
    z = logits.double() / 3.0  # digits that float32 cannot hold
    assert loss(z, targets).item() != loss(z.float(), targets).item()
    assert not torch.equal(loss.predictive_logits(z), loss.predictive_logits(z.float()).double())


def _load_plain_plugin_module() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("calibench_plain_plugin_fixture", PLAIN_PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_predictive_logits_of_a_plain_module_with_only_probabilities() -> None:
    plain = _load_plain_plugin_module().PlainSquaredError()
    assert not hasattr(plain, "predictive_logits")
    logits, _ = _batch(8)
    s = predictive_logits_of(plain, logits)
    assert s.dtype == torch.float32
    torch.testing.assert_close(s, torch.log(plain.probabilities(logits)), rtol=0, atol=0)
    torch.testing.assert_close(torch.softmax(s, dim=-1), plain.probabilities(logits))
    # the log of a softmax is the logits up to a per-row constant
    torch.testing.assert_close(s, torch.log_softmax(logits, dim=-1), rtol=1e-6, atol=1e-6)


def test_a_subclass_overriding_only_probabilities_gets_log_probabilities() -> None:
    class OldStylePlugin(CalibrationLoss):
        def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(logits.float() / 2, targets)

        def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
            return torch.softmax(logits.float() / 2, dim=-1)

    loss = OldStylePlugin()
    logits, _ = _batch(9)
    s = loss.predictive_logits(logits)
    torch.testing.assert_close(s, torch.log_softmax(logits / 2, dim=-1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(predictive_logits_of(loss, logits), s, rtol=0, atol=0)


def test_a_module_with_neither_method_predicts_softmax_of_its_logits() -> None:
    logits, _ = _batch(10)
    assert torch.equal(predictive_logits_of(nn.CrossEntropyLoss(), logits), logits)
    assert predictive_logits_of(nn.CrossEntropyLoss(), logits.half()).dtype == torch.float32


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("scale", [0.0, 1.0, 8.0])
def test_gradients_are_finite(name: str, scale: float) -> None:
    loss = create_loss(name)
    logits, targets = _batch(2, scale)
    logits.requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(logits, targets), logits)
    assert bool(torch.isfinite(grad).all()), grad


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_bf16_autocast_computes_in_float32(name: str) -> None:
    loss = create_loss(name)
    logits, targets = _batch(3)
    low = logits.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(low, targets)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, loss(low.float(), targets), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_skipping_validation_does_not_change_the_value(name: str) -> None:
    loss = create_loss(name)
    logits, targets = _batch(4)
    expected = loss(logits, targets)
    loss.validate_inputs = False
    torch.testing.assert_close(loss(logits, targets), expected)


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize(
    ("bad_targets", "match"),
    [
        (torch.full((N,), K), r"targets must lie in \[0, 5\)"),
        (torch.full((N,), -1), r"targets must lie in \[0, 5\)"),
        (torch.zeros(N, dtype=torch.int32), "targets must be int64"),
        (torch.zeros(N, dtype=torch.float32), "targets must be int64"),
        (torch.zeros(N, K, dtype=torch.int64), r"targets must have shape \(N,\)"),
        (torch.zeros(N + 1, dtype=torch.int64), r"targets must have shape \(N,\)"),
    ],
)
def test_bad_targets_raise_value_error(name: str, bad_targets: torch.Tensor, match: str) -> None:
    logits, _ = _batch()
    with pytest.raises(ValueError, match=match):
        create_loss(name)(logits, bad_targets)


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (math.nan, "NaN or inf"),
        (math.inf, "NaN or inf"),
        (-math.inf, "NaN or inf"),
    ],
)
def test_non_finite_logits_raise_value_error(name: str, bad: float, match: str) -> None:
    logits, targets = _batch()
    logits[2, 3] = bad
    with pytest.raises(ValueError, match=match):
        create_loss(name)(logits, targets)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_malformed_logits_raise_value_error(name: str) -> None:
    loss = create_loss(name)
    _, targets = _batch()
    with pytest.raises(ValueError, match="floating point"):
        loss(torch.zeros(N, K, dtype=torch.int64), targets)
    with pytest.raises(ValueError, match=r"shape \(N, K\)"):
        loss(torch.zeros(N), targets)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_invalid_parameters_raise_value_error(name: str) -> None:
    with pytest.raises(ValueError, match="unknown parameter"):
        create_loss(name, no_such_parameter=1.0)
    for param in _numeric_params(name):
        for bad in (math.nan, math.inf, "abc", None, True):
            with pytest.raises(UsageError, match=f"parameter {param} must"):
                create_loss(name, **{param: bad})
