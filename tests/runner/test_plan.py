"""Parsing --losses / --seeds / name lists, and checking names before any work."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calibench.errors import UnknownNameError, UnknownParameterError, UsageError
from calibench.registry import LOSSES, get_registry
from calibench.runner.plan import (
    LossChoice,
    parse_losses,
    parse_params,
    parse_seeds,
    split_top_level,
)


class _ParamLoss:
    """A loss-shaped factory with an explicit signature, registered only inside tests."""

    def __init__(self, gamma: float = 2.0, alpha: float = 0.5, mode: str = "a") -> None:
        if gamma < 0:
            raise ValueError("gamma must be >= 0")
        self.gamma, self.alpha, self.mode = gamma, alpha, mode


@pytest.fixture
def param_loss(monkeypatch: pytest.MonkeyPatch) -> str:
    LOSSES._ensure_plugins()
    entry = LOSSES._make_entry("t-param", _ParamLoss, "test loss", "", {})
    monkeypatch.setitem(LOSSES._builtins, "t-param", entry)
    return "t-param"


def test_plain_names_resolve_in_order() -> None:
    assert parse_losses("ce") == [LossChoice("ce")]


def test_params_are_parsed_as_literals_with_commas_inside_parentheses(param_loss: str) -> None:
    choices = parse_losses(f"ce, {param_loss}(gamma=2, alpha=0.25),{param_loss}(mode='x,y')")
    assert choices == [
        LossChoice("ce"),
        LossChoice(param_loss, {"gamma": 2, "alpha": 0.25}),
        LossChoice(param_loss, {"mode": "x,y"}),
    ]
    assert choices[1].label == f"{param_loss}(alpha=0.25,gamma=2)"


def test_duplicates_are_dropped(param_loss: str) -> None:
    choices = parse_losses(f"ce,ce,{param_loss}(gamma=1),{param_loss}(gamma=1)")
    assert [c.label for c in choices] == ["ce", f"{param_loss}(gamma=1)"]


def test_all_means_every_registered_loss(param_loss: str) -> None:
    names = [c.name for c in parse_losses("all")]
    assert names == get_registry("losses").names()
    assert param_loss in names and "ce" in names


def test_unknown_name_fails_with_close_matches() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean: ce"):
        parse_losses("ce,cee")


def test_unknown_parameter_fails_against_the_signature(param_loss: str) -> None:
    with pytest.raises(UnknownParameterError, match="beta"):
        parse_losses(f"{param_loss}(beta=1)")


def test_bad_parameter_value_fails_before_training(param_loss: str) -> None:
    with pytest.raises(UsageError, match="gamma must be >= 0"):
        parse_losses(f"{param_loss}(gamma=-1)")


@pytest.mark.parametrize(
    "text",
    ["ce(", "ce)", "focal(2)", "focal(gamma=__import__('os'))", "focal(**x)", "focal(g=1+)"],
)
def test_malformed_or_unsafe_parameters_are_refused(text: str) -> None:
    with pytest.raises(UsageError):
        parse_losses(text)


def test_literal_eval_never_executes_code() -> None:
    with pytest.raises(UsageError, match="literal"):
        parse_params("gamma=open('/etc/passwd')", "loss 'x'")


def test_empty_losses_is_an_error() -> None:
    with pytest.raises(UsageError):
        parse_losses(" , ")


_atom = st.text(alphabet="abcxyz-_:=.0123456789", min_size=1, max_size=8)
_item = st.one_of(
    _atom,
    st.builds(lambda n, args: f"{n}({','.join(args)})", _atom, st.lists(_atom, max_size=3)),
)


@given(st.lists(_item, min_size=1, max_size=6))
def test_split_top_level_inverts_join(items: list[str]) -> None:
    assert split_top_level(",".join(items)) == items


@pytest.mark.parametrize(
    ("text", "seeds"), [("0,1,2", [0, 1, 2]), ("3", [3]), ("0-3", [0, 1, 2, 3]), ("1,1,0", [1, 0])]
)
def test_parse_seeds(text: str, seeds: list[int]) -> None:
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "a", "-1", "1,x"])
def test_bad_seeds(text: str) -> None:
    with pytest.raises(UsageError):
        parse_seeds(text)
