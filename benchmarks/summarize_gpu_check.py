"""Markdown summary of ``gpu_check.sh``'s ``results.jsonl``; exit status 1 if a section failed.

python benchmarks/summarize_gpu_check.py "$OUT/results.jsonl" > "$OUT/summary.md"
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tabulate import tabulate


def _fmt(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def summarize(lines: list[dict[str, Any]]) -> tuple[str, bool]:
    """The markdown tables and whether every section that ran succeeded."""
    rows, ok = [], True
    for entry in lines:
        r = entry.get("result") or {}
        if entry.get("skipped"):
            status = f"skipped ({entry['skipped']})"
        elif entry.get("rc") == 0:
            status = "ok"
        else:
            ok = False
            status = (
                "timed out" if entry.get("rc") in (124, 137) else f"failed rc={entry.get('rc')}"
            )
        name = entry["section"]
        if name.startswith("train_throughput"):
            figures = (
                f"a {_fmt(r.get('img_s_calibench'), '.0f')} / b {_fmt(r.get('img_s_pure'), '.0f')}"
                f" / c {_fmt(r.get('img_s_baseline'), '.0f')} img/s; a/b "
                f"{_fmt(r.get('efficiency'), '.3f')}, a/c {_fmt(r.get('speedup'), '.2f')}x, "
                f"{_fmt(r.get('tflops'), '.1f')} TFLOP/s ({r.get('precision', '')})"
            )
        elif name.startswith("eval_throughput"):
            figures = (
                f"{_fmt(r.get('eval_seconds'), '.2f')} s per full evaluation "
                f"(spread {_fmt((r.get('stats') or {}).get('spread'), '.1%')})"
            )
        elif name.startswith("train_check"):
            hist = ", ".join(f"{v:.3f}" for v in r.get("history", []))
            figures = (
                f"ok={r.get('ok')}; losses {hist}; {_fmt(r.get('train_img_s'), '.0f')} img/s; "
                f"test acc {_fmt((r.get('test') or {}).get('acc'), '.4f')}; "
                f"eval {_fmt(r.get('eval_seconds'), '.2f')} s"
            )
            ok = ok and bool(r.get("ok", entry.get("skipped")))
        else:
            figures = ""
        rows.append([name, status, entry.get("seconds"), figures])
    first = next((e["result"] for e in lines if e.get("result")), {}) or {}
    head = (
        f"gpu_check on {first.get('device_name', '?')}, torch {first.get('torch', '?')}, "
        f"{first.get('date', '?')}, git {first.get('git', '?')}\n\n"
    )
    table = tabulate(rows, headers=["section", "status", "s", "figures"], tablefmt="github")
    return head + table + "\n", ok


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: summarize_gpu_check.py RESULTS.jsonl\n")
        return 2
    lines = [json.loads(x) for x in Path(argv[0]).read_text().splitlines() if x.strip()]
    text, ok = summarize(lines)
    sys.stdout.write(text)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
