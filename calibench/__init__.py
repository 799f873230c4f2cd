"""calibench: a benchmark harness and versioned leaderboard for calibration losses.

The public registry API lives here; importing calibench imports only the standard library.
Heavy modules (torch, timm, torch-uncertainty) load when a kind is first looked up.
"""

from __future__ import annotations

from calibench.errors import CalibenchError, UnknownNameError, UnknownParameterError, UsageError
from calibench.registry import (
    KINDS,
    create_backbone,
    create_dataset,
    create_loss,
    create_ood,
    create_shift,
    get_registry,
    list_backbones,
    list_datasets,
    list_losses,
    list_ood,
    list_shift,
    plugin_statuses,
    register_backbone,
    register_backbone_family,
    register_dataset,
    register_loss,
    register_ood,
    register_shift,
)

__version__ = "0.1.0"

__all__ = [
    "KINDS",
    "CalibenchError",
    "UnknownNameError",
    "UnknownParameterError",
    "UsageError",
    "__version__",
    "create_backbone",
    "create_dataset",
    "create_loss",
    "create_ood",
    "create_shift",
    "get_registry",
    "list_backbones",
    "list_datasets",
    "list_losses",
    "list_ood",
    "list_shift",
    "plugin_statuses",
    "register_backbone",
    "register_backbone_family",
    "register_dataset",
    "register_loss",
    "register_ood",
    "register_shift",
]
