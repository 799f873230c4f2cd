"""Summary of ``gpu_check.sh``'s ``results.jsonl``: markdown on stdout and, with ``--json PATH``,
one JSON object (device, torch, date, git, ok, and per section its status, seconds, a one-line
summary of its figures and its full result); exit status 1 if a section failed.

python benchmarks/summarize_gpu_check.py "$OUT/results.jsonl" --json "$OUT/summary.json" > "$OUT/summary.md"
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tabulate import tabulate


def _fmt(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _figures(name: str, r: dict[str, Any]) -> str:
    """One line of the figures a section's result holds."""
    if name.startswith("train_throughput"):
        return (
            f"a {_fmt(r.get('img_s_calibench'), '.0f')} / b {_fmt(r.get('img_s_pure'), '.0f')}"
            f" / c {_fmt(r.get('img_s_baseline'), '.0f')} img/s; a/b "
            f"{_fmt(r.get('efficiency'), '.3f')}, a/c {_fmt(r.get('speedup'), '.2f')}x, "
            f"{_fmt(r.get('tflops'), '.1f')} TFLOP/s ({r.get('precision', '')})"
        )
    if name.startswith("eval_throughput"):
        return (
            f"{_fmt(r.get('eval_seconds'), '.2f')} s per full evaluation of "
            f"{r.get('n_test')} test + {r.get('n_val')} val + {r.get('n_ood')} OOD + "
            f"{r.get('n_shift', 0)} shift images (spread "
            f"{_fmt((r.get('stats') or {}).get('spread'), '.1%')}); shift grid "
            f"{_fmt((r.get('stages') or {}).get('evaluate_shift'), '.2f')} s"
        )
    if name.startswith("train_check"):
        hist = ", ".join(f"{v:.3f}" for v in r.get("history", []))
        return (
            f"ok={r.get('ok')}; losses {hist}; {_fmt(r.get('train_img_s'), '.0f')} img/s; "
            f"test acc {_fmt((r.get('test') or {}).get('acc'), '.4f')}; "
            f"eval {_fmt(r.get('eval_seconds'), '.2f')} s"
        )
    if name.startswith("checkpoint_cost"):
        return (
            f"{_fmt(r.get('file_mb'), '.1f')} MB in {_fmt(r.get('write_seconds'), '.2f')} s; "
            f"GPU time per epoch at {_fmt(r.get('img_per_s'), '.0f')} img/s: every epoch "
            f"{_fmt(r.get('every_epoch_fraction'), '.1%')}, every "
            f"{_fmt(r.get('by_time_every_s'), '.0f')} s {_fmt(r.get('by_time_fraction'), '.2%')}"
        )
    if name.startswith("sweep_throughput"):
        return "; ".join(
            f"N={s.get('runs_per_device')}: {_fmt(s.get('sweep_img_per_s'), '.0f')} img/s "
            f"({_fmt(s.get('wall_seconds'), '.0f')} s)"
            for s in r.get("sweeps", [])
        )
    return ""


def _status(entry: dict[str, Any]) -> tuple[str, bool]:
    if entry.get("skipped"):
        return f"skipped ({entry['skipped']})", True
    if entry.get("rc") == 0:
        ok = True
        if entry["section"].startswith("train_check"):
            ok = bool((entry.get("result") or {}).get("ok"))
        return "ok" if ok else "check failed", ok
    if entry.get("rc") in (124, 137):
        return "timed out", False
    return f"failed rc={entry.get('rc')}", False


def summary(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The one JSON summary of a check: the environment, ``ok`` and every section."""
    sections = []
    for entry in lines:
        status, ok = _status(entry)
        r = entry.get("result") or {}
        sections.append(
            {
                "section": entry["section"],
                "status": status,
                "ok": ok,
                "seconds": entry.get("seconds"),
                "figures": _figures(entry["section"], r),
                "result": entry.get("result"),
            }
        )
    first = next((e["result"] for e in lines if e.get("result")), {}) or {}
    env = {k: first.get(k) for k in ("device_name", "torch", "date", "git")}
    return {**env, "ok": all(s["ok"] for s in sections), "sections": sections}


def summarize(lines: list[dict[str, Any]]) -> tuple[str, bool]:
    """The markdown tables and whether every section that ran succeeded."""
    s = summary(lines)
    rows = [[x["section"], x["status"], x["seconds"], x["figures"]] for x in s["sections"]]
    head = (
        f"gpu_check on {s['device_name'] or '?'}, torch {s['torch'] or '?'}, "
        f"{s['date'] or '?'}, git {s['git'] or '?'}\n\n"
    )
    table = tabulate(rows, headers=["section", "status", "s", "figures"], tablefmt="github")
    return head + table + "\n", s["ok"]


def main(argv: list[str]) -> int:
    json_path = None
    if len(argv) == 3 and argv[1] == "--json":
        argv, json_path = argv[:1], Path(argv[2])
    if len(argv) != 1:
        sys.stderr.write("usage: summarize_gpu_check.py RESULTS.jsonl [--json SUMMARY.json]\n")
        return 2
    lines = [json.loads(x) for x in Path(argv[0]).read_text().splitlines() if x.strip()]
    text, ok = summarize(lines)
    if json_path is not None:
        json_path.write_text(json.dumps(summary(lines), indent=1) + "\n")
    sys.stdout.write(text)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
