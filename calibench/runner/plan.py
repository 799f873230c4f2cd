"""What ``calibench run`` will do: the selections, the results folder, and the plan.

- **Selections.** ``--losses 'ce,focal(gamma=2)'``, seeds and name lists are parsed here, every
  name is resolved in its registry and every loss parameter is checked against the loss's
  signature (and by building the loss once) before any run starts, so a typo fails the whole
  command at once, with close matches, instead of after hours of training.
- **Results folder.** One self-contained folder per run, no shared index:
  ``RESULTS/<protocol>/<run_id>/`` holds ``record.json`` (written last, by atomic rename),
  ``spec.json``, ``checkpoints/`` (the trainer's), plots and test logits (the evaluator's),
  ``progress.json`` (live progress, removed when the run ends), ``logs/`` (one line per attempt,
  tracebacks of failures) and ``.lock`` (held while a worker trains the run, so two workers never
  train the same run; the OS releases it when the worker dies, even by SIGKILL).
- **Plan.** Every loss × backbone × dataset × seed as a :class:`RunSpec`, with its folder and
  its :class:`~calibench.status.RunState`.
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibench import records
from calibench.errors import RecordError, UsageError
from calibench.registry import Entry, get_registry
from calibench.spec import RunSpec, format_params
from calibench.status import RecordStatus, RunState, state_from_record

# -- selections -----------------------------------------------------------------------------------
_ITEM = re.compile(r"^(?P<name>[^()\s,]+)\s*(?:\((?P<params>.*)\))?$", re.DOTALL)
_OPEN = {"(": ")", "[": "]", "{": "}"}


@dataclass(frozen=True)
class LossChoice:
    """One loss of the sweep: its registry name and explicit parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``focal`` or ``focal(gamma=2)``: the form used in run tables and leaderboard rows."""
        return f"{self.name}({format_params(self.params)})" if self.params else self.name


def split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets or quotes: ``a,b(x=1,y=2)`` -> 2 items."""
    items: list[str] = []
    stack: list[str] = []
    quote: str | None = None
    start = 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote and text[i - 1] != "\\":
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in _OPEN:
            stack.append(_OPEN[ch])
        elif ch in ")]}":
            if not stack or stack.pop() != ch:
                raise UsageError(f"unbalanced '{ch}' at position {i + 1} in {text!r}")
        elif ch == "," and not stack:
            items.append(text[start:i])
            start = i + 1
    if stack or quote:
        raise UsageError(f"unclosed {'quote' if quote else repr(stack[-1])} in {text!r}")
    items.append(text[start:])
    return [item.strip() for item in items]


def parse_params(text: str, where: str) -> dict[str, Any]:
    """``gamma=2, alpha=0.5`` -> ``{"gamma": 2, "alpha": 0.5}``; values are Python literals only."""
    if not text.strip():
        return {}
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError:
        raise UsageError(
            f"cannot parse the parameters of {where}: write them as name=value, e.g. focal(gamma=2)"
        ) from None
    assert isinstance(call, ast.Call)
    if call.args or any(kw.arg is None for kw in call.keywords):
        raise UsageError(
            f"parameters of {where} must be given by name, e.g. focal(gamma=2), got ({text})"
        )
    params: dict[str, Any] = {}
    for kw in call.keywords:
        try:
            params[kw.arg] = ast.literal_eval(kw.value)
        except (ValueError, SyntaxError, TypeError):
            raise UsageError(
                f"parameter {kw.arg} of {where} must be a literal (number, string, bool, list), "
                f"got {ast.unparse(kw.value)}"
            ) from None
        if isinstance(params[kw.arg], (set, dict, bytes, complex)):
            raise UsageError(
                f"parameter {kw.arg} of {where} must be a number, string, bool or list"
            )
    return params


def parse_losses(text: str) -> list[LossChoice]:
    """Resolve ``--losses``: ``all`` (every registered loss, plugins included) or a list of
    ``NAME`` / ``NAME(param=value, ...)``. Raises :class:`UsageError` on the first bad item."""
    registry = get_registry("losses")
    items = [item for item in split_top_level(text) if item]
    if not items:
        raise UsageError("--losses is empty: give loss names such as 'ce,focal' or 'all'")
    choices: list[LossChoice] = []
    for item in items:
        if item == "all":
            choices.extend(LossChoice(name) for name in registry.entries(families=False))
            continue
        match = _ITEM.match(item)
        if match is None:
            raise UsageError(f"cannot parse loss {item!r}: write NAME or NAME(param=value, ...)")
        entry = registry.get(match["name"])
        params = parse_params(match["params"] or "", f"loss '{match['name']}'")
        choices.append(LossChoice(_typed_name(registry, entry), params))
    for choice in choices:
        check_loss(choice)
    unique: dict[str, LossChoice] = {}
    for choice in choices:
        unique.setdefault(choice.label, choice)
    return list(unique.values())


def _typed_name(registry: Any, entry: Entry) -> str:
    """The name a user sees in ``calibench list losses``: plain unless a plugin clashes."""
    try:
        if registry.get(entry.name) is entry:
            return entry.name
    except UsageError:
        pass
    return entry.qualified_name


def check_loss(choice: LossChoice) -> None:
    """Check parameters against the signature, then build the loss once to validate values."""
    entry = get_registry("losses").get(choice.name)
    entry.check_params(choice.params)
    try:
        entry.create(**choice.params)
    except UsageError as exc:
        raise UsageError(f"loss {choice.label}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise UsageError(f"loss {choice.label} rejects its parameters: {exc}") from None


def parse_names(values: list[str] | str, kind: str, option: str) -> list[str]:
    """Names from a repeatable, comma-separated option, each resolved in the ``kind`` registry."""
    raw = [values] if isinstance(values, str) else list(values)
    names = [n.strip() for v in raw for n in v.split(",") if n.strip()]
    registry = get_registry(kind)
    for name in names:
        registry.get(name)
    if not names:
        raise UsageError(f"{option} is empty")
    return list(dict.fromkeys(names))


def parse_backbones(values: list[str] | str) -> list[str]:
    """``--backbone`` names, each resolved and built once (:func:`check_backbone`)."""
    names = parse_names(values, "backbones", "--backbone")
    for name in names:
        check_backbone(name)
    return names


def check_backbone(name: str, num_classes: int = 10) -> None:
    """Build backbone ``name`` once, so that an unknown ``timm:<model>`` or a backbone that cannot
    be built fails the command at once (with close matches) instead of every run.

    The model is built on the meta device (no memory, no weight init); one that cannot be built
    there is built on the CPU.
    """
    import torch

    entry = get_registry("backbones").get(name)
    try:
        with torch.device("meta"):
            entry.create(num_classes=num_classes)
        return
    except UsageError:
        raise
    except Exception:  # a meta-device limitation, or a real problem the CPU build will show
        pass
    try:
        entry.create(num_classes=num_classes)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"backbone {name} cannot be built: {exc}") from None


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` or a range ``0-4`` (inclusive) -> sorted distinct non-negative seeds."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            if sep:
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise UsageError(
                f"--seeds must be integers such as 0,1,2 or a range 0-4, got {part!r}"
            ) from None
    if not seeds or any(s < 0 for s in seeds):
        raise UsageError(f"--seeds must be non-negative integers, got {text!r}")
    return list(dict.fromkeys(seeds))


# -- the results folder ---------------------------------------------------------------------------
RECORD = records.RECORD_FILENAME
SPEC = "spec.json"
CHECKPOINTS = "checkpoints"
PROGRESS = "progress.json"
LOGS = "logs"
LOCK = ".lock"
RESULTS_ENV = "CALIBENCH_RESULTS"


def default_results_dir() -> Path:
    """Where ``calibench run`` writes and ``calibench leaderboard`` reads: $CALIBENCH_RESULTS or ./results."""
    return Path(os.environ.get(RESULTS_ENV) or "results")


def run_dir(results: Path | str, spec: RunSpec) -> Path:
    """``RESULTS/<protocol>/<run_id>``."""
    return Path(results) / spec.protocol / spec.run_id()


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path`` (``progress.json``), or None when it is missing or unreadable."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def record_status(directory: Path) -> tuple[RecordStatus | None, str]:
    """``(status, reason)`` of the run's record, read and validated by :mod:`calibench.records`.

    ``(None, "")`` without a record; ``(None, why)`` for a malformed one, which a rerun replaces.
    """
    path = directory / RECORD
    if not path.is_file():
        return None, ""
    try:
        record = records.load_record(path)
    except RecordError as exc:
        return None, f"invalid record, to be replaced ({exc})"
    status = RecordStatus(record["status"])
    return status, "" if status is RecordStatus.COMPLETED else str(record.get("reason") or "")


def has_checkpoint(directory: Path) -> bool:
    ckpt = directory / CHECKPOINTS
    return ckpt.is_dir() and any(p.is_file() and not p.name.startswith(".") for p in ckpt.iterdir())


def run_state(directory: Path) -> tuple[RunState, str]:
    """The run's :class:`~calibench.status.RunState` and the reason its record gives, if any."""
    status, reason = record_status(directory)
    state = state_from_record(status, has_checkpoint(directory))
    return state, "" if state is RunState.DONE else reason


# -- the plan -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedRun:
    """One run of the plan, where its files live, and what a rerun would do with it."""

    spec: RunSpec
    run_dir: Path
    state: RunState
    reason: str = ""

    @property
    def run_id(self) -> str:
        return self.run_dir.name


def build_specs(
    protocol: Any,
    losses: Sequence[LossChoice],
    backbones: Sequence[str],
    datasets: Sequence[str],
    seeds: Sequence[int],
    ood: Sequence[str] = (),
    deviations: dict[str, Any] | None = None,
) -> list[RunSpec]:
    """The cartesian product, in loss-major order; ``protocol`` gives name/version/content hash."""
    return [
        RunSpec(
            protocol=protocol.name,
            protocol_version=protocol.version,
            protocol_hash=protocol.content_hash,
            loss=loss.name,
            loss_params=dict(loss.params),
            backbone=backbone,
            dataset=dataset,
            seed=seed,
            ood=tuple(ood),
            deviations=dict(deviations or {}),
        )
        for loss, backbone, dataset, seed in itertools.product(losses, backbones, datasets, seeds)
    ]


def plan_run(spec: RunSpec, results: Path | str) -> PlannedRun:
    """``spec`` with its run folder and current state (see :func:`run_state`)."""
    directory = run_dir(results, spec)
    return PlannedRun(spec, directory, *run_state(directory))


def plan_runs(specs: Sequence[RunSpec], results: Path | str) -> list[PlannedRun]:
    return [plan_run(spec, results) for spec in specs]


#: Training work (epochs × training images) that fits a CPU: resnet20 does the `small`
#: protocol's 350,000 in about 14 minutes per run on one AMX core (``benchmarks/RESULTS.md``).
CPU_IMAGE_EPOCHS = 400_000


def cpu_sized(protocol: Any) -> bool:
    """Whether ``protocol`` trains on a subset small enough for a CPU: at most
    :data:`CPU_IMAGE_EPOCHS` epochs × images (the whole training split never is)."""
    images = protocol.data.train_subset
    return 0 < images * protocol.train.epochs <= CPU_IMAGE_EPOCHS


def check_data_available(specs: Sequence[RunSpec], data_root: str | Path | None) -> None:
    """Load every dataset and OOD set ``specs`` need once, before any run starts.

    Missing data then fails the whole command with one :class:`~calibench.errors.DataNotFoundError`
    that names the files looked for, instead of one ``failed`` record per run. A download, where
    allowed, happens here once.
    """
    from calibench.registry import create_dataset, create_ood

    for name in sorted({s.dataset for s in specs}):
        create_dataset(name, root=data_root)
    for name in sorted({o for s in specs for o in s.ood}):
        create_ood(name, root=data_root)
