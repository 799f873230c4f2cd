"""Protocols: shipped files, validation errors, the content hash, overrides, LR schedule."""

from __future__ import annotations

import copy
import fnmatch
import sys
from importlib import resources
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from calibench.errors import ProtocolError, UsageError
from calibench.protocols import (
    DEFAULTS,
    OVERRIDES,
    PRECISIONS,
    PROTOCOLS_ENV,
    SHIPPED_DIR,
    Protocol,
    compute_content_hash,
    file_content_hash,
    list_protocols,
    load_protocol,
    protocol_dirs,
    write_content_hash,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SHIPPED = ("fast", "small", "smoke", "standard")
DEFAULTS_TRAIN = {"loss_reduction": "mean"}
SMOKE_V1_HASH = "sha256:89e9f05755cf36348a2ad3d41bda444ee999ad98f6d2820d9843c57799ae970a"
SMOKE_V1_DESCRIPTION = """A plumbing check, not a benchmark: 2 epochs on a class-stratified \
2,000-image subset of the training split, cosine schedule, the `standard` optimizer and \
augmentation; evaluation on at most 1,000 test images and the offline noise OOD sets. Sized so \
that resnet20 trains and evaluates in about a minute on 2 CPU cores."""

# `standard` v1 exactly as published (before `train.loss_reduction` existed). Records made with
# it name this hash, so it must keep loading with it.
STANDARD_V1 = r'''
name = "standard"
version = 1
content_hash = "sha256:82bd335a3f9f3d10a9826ec5c4c08f1e094ee59b6daf0822761689e5544de37c"
description = """Mukhoti et al. 2020 training on CIFAR: 350 epochs of SGD (momentum 0.9, lr 0.1, \
x0.1 at epochs 150 and 250, weight decay 5e-4), batch 128, random crop (pad 4) + horizontal \
flip, a 5,000-image stratified validation split carved from the training set (used for \
temperature scaling). ECE with 15 equal-width bins; SVHN and noise images as OOD."""
reference = "Mukhoti, Kulharia, Sanyal, Golodetz, Torr, Dokania. Calibrating Deep Neural Networks using Focal Loss. NeurIPS 2020 (arXiv:2002.09437), Sec. 5 and App. E"

[data]
dataset = "cifar10"
val_size = 5000
train_subset = 0

[train]
epochs = 350
batch_size = 128
precision = "bf16"
grad_clip = 0.0

[train.optimizer]
name = "sgd"
lr = 0.1
momentum = 0.9
nesterov = false
weight_decay = 5e-4

[train.schedule]
name = "multistep"
warmup_epochs = 0
milestones = [150, 250]
gamma = 0.1

[train.augment]
crop_padding = 4
flip = true

[eval]
batch_size = 1000
ece_bins = 15
ood = ["svhn", "gaussian", "uniform"]
temperature_scaling = true
max_images = 0
'''


def _raw(name: str) -> dict:
    return tomllib.loads(load_protocol(name).path.read_text())


def _write(path: Path, d: dict) -> Path:
    """Write ``d`` as TOML (enough of TOML for protocol files)."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines: list[str] = []

    def table(prefix: str, t: dict) -> None:
        if prefix:
            lines.append(f"[{prefix}]")
        for k, v in t.items():
            if not isinstance(v, dict):
                lines.append(f"{k} = {value(v)}")
        for k, v in t.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}" if prefix else k, v)

    table("", d)
    path.write_text("\n".join(lines) + "\n")
    return path


def _rehash(d: dict) -> dict:
    d["content_hash"] = compute_content_hash(d)
    return d


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_protocol_hash_is_right(name: str) -> None:
    raw = _raw(name)
    assert raw["content_hash"] == compute_content_hash(raw)
    protocol = load_protocol(name)
    assert protocol.name == name
    assert protocol.label == f"{name}@v{protocol.version}"


def test_list_protocols_finds_the_shipped_ones() -> None:
    names = [p.name for p in list_protocols()]
    assert set(SHIPPED) <= set(names)
    assert names == sorted(names)


def test_protocols_are_package_data(repo_root: Path) -> None:
    packaged = resources.files("calibench") / "protocol_files"
    assert Path(str(packaged)) == SHIPPED_DIR
    assert protocol_dirs()[-1] == SHIPPED_DIR
    for name in SHIPPED:
        assert (packaged / f"{name}.toml").read_bytes() == load_protocol(name).path.read_bytes()
    # pyproject's package-data globs take every shipped file into wheels and sdists.
    pyproject = tomllib.loads((repo_root / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["calibench"]
    shipped = sorted(p.relative_to(SHIPPED_DIR.parent).as_posix() for p in SHIPPED_DIR.iterdir())
    assert shipped == [f"protocol_files/{n}.toml" for n in SHIPPED]
    assert all(any(fnmatch.fnmatch(f, g) for g in globs) for f in shipped)
    # One copy: no symlink into the package, no second folder to fall back to.
    assert not (repo_root / "calibench" / "_protocols").exists()
    assert not (repo_root / "registry" / "protocols").exists()


@pytest.mark.parametrize("name", SHIPPED)
def test_to_dict_is_the_file_format(name: str) -> None:
    p = load_protocol(name)
    assert Protocol.from_dict(p.to_dict()) == p
    raw = _raw(name)
    assert p.to_dict() == {**raw, "train": {**DEFAULTS_TRAIN, **raw["train"]}}
    assert PRECISIONS == ("bf16", "fp32") and p.train.precision in PRECISIONS


def test_standard_is_mukhoti_2020() -> None:
    p = load_protocol("standard")
    t = p.train
    assert p.label == "standard@v3"
    assert (t.loss_reduction, t.grad_clip) == ("sum", 2.0)  # their train_utils.py
    assert (t.epochs, t.batch_size) == (350, 128)
    assert (t.optimizer.name, t.optimizer.lr, t.optimizer.momentum) == ("sgd", 0.1, 0.9)
    assert t.optimizer.weight_decay == 5e-4
    assert (t.schedule.name, t.schedule.milestones, t.schedule.gamma) == (
        "multistep",
        (150, 250),
        0.1,
    )
    assert (t.augment.crop_padding, t.augment.flip) == (4, True)
    assert (p.data.dataset, p.data.val_size, p.data.train_subset) == ("cifar10", 5000, 0)
    assert p.eval.ece_bins == 15 and p.eval.temperature_scaling
    assert "Mukhoti" in p.reference and "torrvision/focal_calibration" in p.reference
    # What still differs from their code is listed in the description, in one place.
    assert p.description.count("STILL DIFFERENT FROM THEIR CODE") == 1
    assert "Brier" in p.description.split("STILL DIFFERENT FROM THEIR CODE")[1]


def test_fast_is_v3_like_standard_and_smoke_is_v2() -> None:
    standard, fast, smoke = (load_protocol(n) for n in ("standard", "fast", "smoke"))
    assert fast.label == "fast@v3"
    assert (fast.train.loss_reduction, fast.train.grad_clip) == ("sum", 2.0)
    assert fast.train.optimizer == standard.train.optimizer
    assert fast.data == standard.data and fast.eval == standard.eval
    assert smoke.label == "smoke@v2"
    assert (smoke.train.loss_reduction, smoke.train.grad_clip) == ("mean", 0.0)
    assert "loss_reduction" not in _raw("smoke")["train"]


def test_v1_files_without_loss_reduction_keep_their_hash(tmp_path: Path) -> None:
    path = tmp_path / "standard.toml"
    path.write_text(STANDARD_V1)
    v1 = load_protocol(path)
    assert v1.label == "standard@v1" and v1.train.loss_reduction == "mean"
    assert v1.content_hash == compute_content_hash(tomllib.loads(STANDARD_V1))
    assert v1.content_hash != load_protocol("standard").content_hash
    # Spelling the default out means the same protocol: same hash. "sum" is another protocol.
    d = tomllib.loads(STANDARD_V1)
    d["train"]["loss_reduction"] = "mean"
    assert compute_content_hash(d) == v1.content_hash
    assert load_protocol(_write(tmp_path / "spelled.toml", d)) == v1
    d["train"]["loss_reduction"] = "sum"
    assert compute_content_hash(d) != v1.content_hash
    with pytest.raises(ProtocolError, match="bump the version"):
        load_protocol(_write(tmp_path / "changed.toml", d))
    assert DEFAULTS == {
        "train.loss_reduction": "mean",
        "eval.shift": (),
        "eval.shift_max_images": 0,
    }
    assert (v1.eval.shift, v1.eval.shift_max_images) == ((), 0)


def test_smoke_v1_keeps_its_hash_without_the_shift_keys() -> None:
    """smoke v1 as published (no shift keys) still hashes to its recorded value, with the
    defaults omitted or spelled out; the shift keys of v2 change the content."""
    d = _raw("smoke")
    shift = (d["eval"].pop("shift"), d["eval"].pop("shift_max_images"))
    d.update(version=1, description=SMOKE_V1_DESCRIPTION)
    assert compute_content_hash(d) == SMOKE_V1_HASH
    d["eval"].update(shift=[], shift_max_images=0)
    assert compute_content_hash(d) == SMOKE_V1_HASH
    d["eval"].update(shift=shift[0], shift_max_images=shift[1])
    assert compute_content_hash(d) != SMOKE_V1_HASH


def test_shift_settings_of_the_shipped_protocols() -> None:
    standard, fast, smoke = (load_protocol(n) for n in ("standard", "fast", "smoke"))
    for p in (standard, fast, smoke):
        assert p.eval.shift == ("cifar10-c", "cifar100-c")
    # GPU protocols evaluate the full grid; smoke a few images per cell.
    assert standard.eval.shift_max_images == fast.eval.shift_max_images == 0
    assert 0 < smoke.eval.shift_max_images <= 50


def test_fast_is_shorter_and_cited_smoke_is_small() -> None:
    standard, fast, smoke = (load_protocol(n) for n in ("standard", "fast", "smoke"))
    assert fast.train.epochs < standard.train.epochs
    assert "Loshchilov" in fast.reference and "regime" in fast.description
    assert smoke.train.epochs <= 2 and 0 < smoke.data.train_subset <= 5000
    assert 0 < smoke.eval.max_images <= 2000
    assert "svhn" not in smoke.eval.ood  # no download needed


def test_hash_ignores_spelling_but_not_meaning() -> None:
    d = _raw("standard")
    h = compute_content_hash(d)
    reordered = dict(reversed(list(d.items())))
    assert compute_content_hash(reordered) == h
    spelled = copy.deepcopy(d)
    spelled["train"]["grad_clip"] = 2  # int where a float is expected
    assert compute_content_hash(spelled) == h
    changed = copy.deepcopy(d)
    changed["train"]["optimizer"]["weight_decay"] = 1e-4
    assert compute_content_hash(changed) != h
    bumped = copy.deepcopy(d)
    bumped["version"] += 1
    assert compute_content_hash(bumped) != h


@settings(max_examples=25, deadline=None)
@given(
    epochs=st.integers(1, 10_000),
    lr=st.floats(1e-6, 10.0, allow_nan=False),
    wd=st.floats(0.0, 1e-2, allow_nan=False),
)
def test_hash_is_a_function_of_content(epochs: int, lr: float, wd: float) -> None:
    d = _raw("standard")
    d["train"]["epochs"] = epochs
    d["train"]["optimizer"]["lr"] = lr
    d["train"]["optimizer"]["weight_decay"] = wd
    h = compute_content_hash(d)
    assert h == compute_content_hash(copy.deepcopy(d))
    assert h.startswith("sha256:") and len(h) == len("sha256:") + 64
    other = copy.deepcopy(d)
    other["train"]["epochs"] = epochs + 1
    assert compute_content_hash(other) != h


def test_content_changed_without_version_bump_is_refused(tmp_path: Path) -> None:
    d = _raw("standard")
    d["train"]["epochs"] = 300
    path = _write(tmp_path / "standard.toml", d)
    new_hash = compute_content_hash(d)
    with pytest.raises(ProtocolError, match="bump the version") as err:
        load_protocol(path)
    assert new_hash in str(err.value) and str(path) in str(err.value)
    d["version"] = 2
    _write(path, _rehash(d))
    assert load_protocol(path).version == 2


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["train"]["optimizer"].update(lrr=0.1), r"unknown key 'train\.optimizer\.lrr'.*did you mean 'lr'"),
        (lambda d: d.update(extra=1), "unknown key 'extra'"),
        (lambda d: d["train"].update(epochs="350"), r"'train\.epochs' must be an integer, got '350'"),
        (lambda d: d["train"].update(epochs=1.5), r"'train\.epochs' must be an integer"),
        (lambda d: d["train"]["optimizer"].update(nesterov=1), r"nesterov' must be true or false"),
        (lambda d: d["train"].update(precision="fp16"), r"precision' must be one of bf16, fp32"),
        (lambda d: d["train"].update(epochs=0), r"'train\.epochs' must be >= 1"),
        (lambda d: d["train"]["optimizer"].update(lr=-0.1), r"lr' must be > 0"),
        (lambda d: d["train"]["schedule"].update(milestones=[250, 150]), "strictly increasing"),
        (lambda d: d["train"]["schedule"].update(name="step"), "must be one of multistep, cosine"),
        (lambda d: d["train"]["schedule"].update(name="cosine"), "only applies to schedule 'multistep'"),
        (lambda d: d["eval"].pop("ece_bins"), r"missing key\(s\) eval\.ece_bins"),
        (lambda d: d.update(data=3), r"'data' must be a table"),
        (lambda d: d["eval"].update(ood=["svhn", "svhn"]), "distinct"),
        (lambda d: d["train"]["schedule"].update(warmup_epochs=400), "smaller than 'train.epochs'"),
        (lambda d: d["train"]["optimizer"].update(momentum=0.0, nesterov=True), "nesterov"),
        (lambda d: d["train"].update(loss_reduction="avg"), r"'train\.loss_reduction' must be one of mean, sum, got 'avg'"),
        (lambda d: d["train"].update(loss_reduction=1), r"'train\.loss_reduction' must be a string"),
        (lambda d: d["train"].update(reduction="sum"), r"unknown key 'train\.reduction'.*did you mean 'loss_reduction'"),
        (lambda d: d["eval"].update(shift="cifar10-c"), r"'eval\.shift' must be a list of strings"),
        (lambda d: d["eval"].update(shift=["cifar10-c", "cifar10-c"]), r"'eval\.shift' must be distinct"),
        (lambda d: d["eval"].update(shift=[""]), r"'eval\.shift' must be distinct non-empty names"),
        (lambda d: d["eval"].update(shift_max_images=-1), r"'eval\.shift_max_images' must be >= 0"),
        (lambda d: d["eval"].update(shift_max_images=2.5), r"'eval\.shift_max_images' must be an integer"),
        (lambda d: d["eval"].update(shift=[], shift_max_images=20), r"'eval\.shift_max_images' applies only with 'eval\.shift'"),
        (lambda d: d["eval"].update(shift_images=20), r"unknown key 'eval\.shift_images'.*did you mean 'shift_max_images'"),
    ],
)  # fmt: skip
def test_bad_content_gives_a_clear_error(tmp_path: Path, edit, message: str) -> None:
    d = _raw("standard")
    edit(d)
    path = _write(tmp_path / "bad.toml", d)
    with pytest.raises(ProtocolError, match=message):
        load_protocol(path)


def test_unreadable_files_and_unknown_names(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text("name = [unclosed\n")
    with pytest.raises(ProtocolError, match="not valid TOML"):
        load_protocol(bad)
    with pytest.raises(ProtocolError, match="does not exist"):
        load_protocol(tmp_path / "missing.toml")
    with pytest.raises(ProtocolError, match="Did you mean: standard"):
        load_protocol("standrad")
    with pytest.raises(ProtocolError, match="invalid protocol name"):
        load_protocol("Bad Name")
    assert isinstance(ProtocolError("x"), UsageError)


def test_user_protocol_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _raw("smoke")
    d["name"] = "mine"
    _write(tmp_path / "mine.toml", _rehash(d))
    d2 = _raw("smoke")
    d2["name"] = "other"
    _write(tmp_path / "misnamed.toml", _rehash(d2))
    monkeypatch.setenv(PROTOCOLS_ENV, str(tmp_path))
    assert protocol_dirs()[0] == tmp_path
    assert load_protocol("mine").train == load_protocol("smoke").train
    with pytest.raises(ProtocolError, match="must match the file name"):
        load_protocol("misnamed")


def test_overrides_record_only_real_deviations() -> None:
    p = load_protocol("standard")
    same, deviations = p.with_overrides(epochs=350, batch_size=None)
    assert same == p and deviations == {}
    q, deviations = p.with_overrides(epochs=2, train_subset=2000, lr=0.05, batch_size=128)
    assert deviations == {"epochs": 2, "lr": 0.05, "train_subset": 2000}
    assert (q.train.epochs, q.data.train_subset, q.train.optimizer.lr) == (2, 2000, 0.05)
    assert (q.name, q.version, q.content_hash) == (p.name, p.version, p.content_hash)
    assert q.train.schedule == p.train.schedule
    again, deviations_again = p.with_overrides(**deviations)
    assert again == q and deviations_again == deviations
    _, d = p.with_overrides(lr=1)  # an int where a float is expected becomes a float
    assert d == {"lr": 1.0} and isinstance(d["lr"], float)
    mean, d = p.with_overrides(loss_reduction="mean", precision="bf16")
    assert d == {"loss_reduction": "mean"} and mean.train.loss_reduction == "mean"
    assert mean.train.grad_clip == p.train.grad_clip


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epochs": 0}, r"'train\.epochs' must be >= 1"),
        ({"batch_size": "128"}, r"'train\.batch_size' must be an integer"),
        ({"precision": "fp16"}, "must be one of bf16, fp32"),
        ({"train_subset": -1}, r"train_subset' must be >= 0"),
        ({"loss_reduction": "none"}, r"loss_reduction' must be one of mean, sum"),
    ],
)
def test_bad_overrides_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        load_protocol("standard").with_overrides(**overrides)


def test_unknown_override_is_refused() -> None:
    assert set(OVERRIDES) >= {"epochs", "batch_size", "train_subset", "lr", "eval_max_images"}
    with pytest.raises(ProtocolError, match=r"unknown protocol override\(s\) momentum; allowed: "):
        load_protocol("standard").with_overrides(momentum=0.5, epochs=3)


# -- filling in content_hash ------------------------------------------------------------------
PLACEHOLDER = "sha256:" + "0" * 64


def _smoke_variant(tmp_path: Path, hash_line: str | None) -> tuple[Path, str]:
    """smoke.toml as a new protocol ``mine`` with 1 epoch and the given content_hash line."""
    text = load_protocol("smoke").path.read_text()
    text = text.replace('name = "smoke"', 'name = "mine"').replace("epochs = 2", "epochs = 1")
    lines = [line for line in text.splitlines(keepends=True) if not line.startswith("content_hash")]
    without = "".join(lines)
    if hash_line is not None:
        at = next(i for i, line in enumerate(lines) if line.startswith("version")) + 1
        lines.insert(at, hash_line + "\n")
    path = tmp_path / "mine.toml"
    path.write_text("".join(lines))
    return path, without


def test_write_content_hash_adds_a_missing_line(tmp_path: Path) -> None:
    path, without = _smoke_variant(tmp_path, None)
    recorded, actual = file_content_hash(path)
    assert recorded is None and actual == compute_content_hash(tomllib.loads(without))
    assert write_content_hash(path) == (None, actual)
    text = path.read_text()
    assert text.replace(f'content_hash = "{actual}"\n', "") == without
    assert text.index("content_hash") > text.index("version = 2")
    p = load_protocol(path)
    assert (p.name, p.content_hash, p.train.epochs) == ("mine", actual, 1)
    assert [f.name for f in tmp_path.iterdir()] == ["mine.toml"]  # no temporary file left


def test_write_content_hash_replaces_a_stale_value_and_keeps_comments(tmp_path: Path) -> None:
    path, without = _smoke_variant(tmp_path, f"content_hash = '{PLACEHOLDER}'  # fill me in")
    with pytest.raises(ProtocolError, match="bump the version"):
        load_protocol(path)
    recorded, actual = write_content_hash(path)
    assert recorded == PLACEHOLDER
    line = f'content_hash = "{actual}"  # fill me in\n'
    assert path.read_text().replace(line, "") == without  # only the value changed
    assert load_protocol(path).content_hash == actual
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    assert write_content_hash(path) == (actual, actual)  # up to date: the file is not rewritten
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_write_content_hash_refuses_bad_files(tmp_path: Path) -> None:
    path, _ = _smoke_variant(tmp_path, "content_hash = 3")  # not a string: cannot edit in place
    before = path.read_bytes()
    with pytest.raises(
        ProtocolError, match="could not place content_hash in it; write content_hash"
    ):
        write_content_hash(path)
    path.write_bytes(before.replace(b"epochs = 1", b"epochs = 0"))
    with pytest.raises(ProtocolError, match=r"mine\.toml: 'train\.epochs' must be >= 1, got 0"):
        write_content_hash(path)
    with pytest.raises(ProtocolError, match="cannot read protocol file"):
        file_content_hash(tmp_path / "missing.toml")
    assert path.read_bytes() == before.replace(b"epochs = 1", b"epochs = 0")


def _torch_lrs(make, epochs: int) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = make(opt)
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_multistep_factor_matches_torch_multisteplr() -> None:
    s = load_protocol("standard").train.schedule
    ours = [s.lr_factor(e, 350) for e in range(350)]
    ref = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[150, 250], gamma=0.1), 350
    )
    assert ours == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("epochs", [2, 7, 200])
def test_cosine_factor_matches_torch_cosineannealinglr(epochs: int) -> None:
    s = load_protocol("fast").train.schedule
    ours = [s.lr_factor(e, epochs) for e in range(epochs)]
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=epochs), epochs)
    assert ours == pytest.approx(ref, rel=1e-6, abs=1e-12)


def test_warmup_is_linear_then_the_schedule(tmp_path: Path) -> None:
    d = _raw("fast")
    d["train"]["schedule"]["warmup_epochs"] = 5
    s = load_protocol(_write(tmp_path / "w.toml", _rehash(d))).train.schedule
    assert [s.lr_factor(e, 200) for e in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert s.lr_factor(5, 200) == 1.0
    assert s.lr_factor(199, 200) < 1e-3
