"""The generic registry: registration, lookup, parameters, errors (no plugins involved)."""

from __future__ import annotations

import pytest
import torch

import calibench
from calibench.errors import RegistrationError, UnknownNameError, UnknownParameterError, UsageError
from calibench.registry import KINDS, Registry, get_registry


@pytest.fixture
def widgets() -> Registry:
    # builtin_module is any importable module: these tests register their own entries.
    return Registry("widgets", builtin_module="calibench.errors", group="calibench.test-widgets")


def test_register_and_create_class(widgets: Registry) -> None:
    @widgets.register("box", summary="A box", reference="Doe 2020")
    class Box:
        def __init__(self, width: float = 1.5, label: str = "b") -> None:
            self.width = width
            self.label = label

    entry = widgets.get("box")
    assert entry.summary == "A box"
    assert entry.reference == "Doe 2020"
    assert entry.defaults == {"width": 1.5, "label": "b"}
    assert entry.source.type == "local"
    box = widgets.create("box", width=3.0)
    assert isinstance(box, Box)
    assert box.width == 3.0


def test_summary_defaults_to_docstring_first_line(widgets: Registry) -> None:
    @widgets.register("f")
    def make_f(x: int = 1) -> int:
        """Make an f.

        More text.
        """
        return x

    assert widgets.get("f").summary == "Make an f."
    assert widgets.create("f", x=4) == 4


def test_unknown_parameter_names_accepted_ones(widgets: Registry) -> None:
    @widgets.register("g")
    def make_g(alpha: float = 1.0, beta: float = 2.0) -> float:
        return alpha + beta

    with pytest.raises(UnknownParameterError, match=r"gamma.*accepted parameters: alpha, beta"):
        widgets.create("g", gamma=3)
    assert isinstance(UnknownParameterError("x"), ValueError)


def test_missing_required_parameter(widgets: Registry) -> None:
    @widgets.register("h")
    def make_h(size: int) -> int:
        return size

    with pytest.raises(UnknownParameterError, match=r"needs parameter.*size"):
        widgets.create("h")
    assert widgets.create("h", size=2) == 2


def test_kwargs_factories_accept_anything(widgets: Registry) -> None:
    @widgets.register("kw")
    def make_kw(**kwargs: object) -> dict:
        return kwargs

    assert widgets.create("kw", anything=1) == {"anything": 1}


def test_duplicate_registration_is_an_error(widgets: Registry) -> None:
    widgets.register("dup")(lambda: 1)
    with pytest.raises(RegistrationError, match="registered twice"):
        widgets.register("dup")(lambda: 2)


def test_builtin_name_registered_twice_is_an_error() -> None:
    calibench.list_losses()  # load built-ins
    with pytest.raises(RegistrationError, match="'ce' is registered twice"):
        calibench.register_loss("ce")(torch.nn.Module)


@pytest.mark.parametrize("bad", ["", "a:b", " x"])
def test_invalid_names_are_rejected(widgets: Registry, bad: str) -> None:
    with pytest.raises(RegistrationError, match="invalid"):
        widgets.register(bad)


def test_unknown_name_suggests_close_matches(widgets: Registry) -> None:
    widgets.register("focal")(lambda: 1)
    widgets.register("flsd53")(lambda: 1)
    with pytest.raises(UnknownNameError, match=r"Did you mean: focal") as exc:
        widgets.get("focall")
    assert "calibench list widgets" in str(exc.value)
    assert isinstance(exc.value, UsageError)


def test_create_loss_cee_suggests_ce() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown loss 'cee'\. Did you mean: ce"):
        calibench.create_loss("cee")


def test_list_filters_with_fnmatch(widgets: Registry) -> None:
    for name in ("iq-tv", "iq-chi2", "focal"):
        widgets.register(name)(lambda: 1)
    assert list(widgets.entries("iq-*")) == ["iq-chi2", "iq-tv"]
    assert list(widgets.entries()) == ["focal", "iq-chi2", "iq-tv"]
    assert widgets.entries("nothing*") == {}


def test_family_handles_prefixed_names(widgets: Registry) -> None:
    @widgets.register_family("timm", summary="any timm model")
    def make(model_name: str, num_classes: int = 10) -> tuple:
        return model_name, num_classes

    assert widgets.create("timm:resnet18", num_classes=3) == ("resnet18", 3)
    entry = widgets.get("timm:vit_tiny")
    assert entry.defaults == {"num_classes": 10}
    with pytest.raises(UnknownParameterError):
        widgets.create("timm:resnet18", depth=3)
    assert "timm:<name>" in widgets.entries()


def test_get_registry_validates_kind() -> None:
    assert set(KINDS) == {"losses", "backbones", "datasets", "ood", "shift"}
    with pytest.raises(UnknownNameError, match=r"Did you mean 'losses'.*Valid kinds"):
        get_registry("lossez")


def test_ce_is_builtin_and_documented() -> None:
    entry = get_registry("losses").get("ce")
    assert entry.source.as_dict() == {"type": "builtin"}
    assert entry.summary and entry.reference
    loss = calibench.create_loss("ce")
    assert isinstance(loss, torch.nn.Module)
    logits = torch.randn(5, 3)
    targets = torch.tensor([0, 1, 2, 1, 0])
    torch.testing.assert_close(
        loss(logits, targets), torch.nn.functional.cross_entropy(logits, targets)
    )


def test_import_calibench_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, calibench; "
        "heavy = [m for m in ('torch', 'timm', 'torch_uncertainty', 'lightning') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
