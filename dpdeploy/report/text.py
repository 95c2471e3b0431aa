"""The report result for the terminal: status first, then what was written."""
from __future__ import annotations

from dpdeploy.ui import render
from dpdeploy.report import ReportResult

_CODES = {"OK": "32", "FAILED": "31", "INCOMPLETE": "33"}


def summary(r: ReportResult) -> str:
    lines = [render._color(_CODES.get(r.status, "0") + ";1", r.headline)]
    lines += [f"  {kind} run: {folder}" for kind, folder in r.runs] or ["  no run records found"]
    for f in r.files:
        lines.append(f"  wrote {f} ({f.stat().st_size / 1024:.0f} KiB)")
    lines += [f"  ! {p}" for p in r.problems]
    lines.append("  render time: " + ", ".join(f"{k} {v:.2f} s" for k, v in r.seconds.items()))
    return "\n".join(lines)
