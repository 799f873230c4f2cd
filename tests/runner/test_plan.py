"""Parsing --losses / --seeds / name lists, and checking names before any work."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calibench.errors import UnknownNameError, UnknownParameterError, UsageError
from calibench.registry import LOSSES, get_registry
from calibench.runner.plan import (
    LossChoice,
    check_backbone,
    cpu_sized,
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
    assert names == list(get_registry("losses").entries(families=False))
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


def test_an_unknown_timm_model_fails_with_close_matches() -> None:
    with pytest.raises(
        UsageError, match=r"unknown timm model 'resnet5O'\. Did you mean: timm:resnet50"
    ):
        check_backbone("timm:resnet5O")
    check_backbone("timm:resnet18")


def test_a_backbone_the_meta_device_cannot_build_is_built_on_the_cpu(monkeypatch) -> None:
    import torch

    from calibench.registry import Entry

    devices: list[str] = []

    def create(self, **params):
        devices.append(torch.empty(0).device.type)
        if devices[-1] == "meta":
            raise NotImplementedError("no meta kernel")

    monkeypatch.setattr(Entry, "create", create)
    check_backbone("resnet20")
    assert devices == ["meta", "cpu"]


def test_a_backbone_that_rejects_its_arguments_is_a_usage_error(monkeypatch) -> None:
    from calibench.registry import Entry

    def create(self, **params):
        raise TypeError(f"bad {sorted(params)}")

    monkeypatch.setattr(Entry, "create", create)
    with pytest.raises(
        UsageError, match=r"backbone resnet20 cannot be built: bad \['num_classes'\]"
    ):
        check_backbone("resnet20")


def test_only_small_training_subsets_are_cpu_sized() -> None:
    from calibench.protocols import load_protocol

    smoke, standard = load_protocol("smoke"), load_protocol("standard")
    assert cpu_sized(smoke) and cpu_sized(load_protocol("small"))
    assert not cpu_sized(standard) and not cpu_sized(load_protocol("fast"))
    assert not cpu_sized(smoke.with_overrides(epochs=300)[0])
    assert cpu_sized(standard.with_overrides(epochs=2, train_subset=500)[0])
