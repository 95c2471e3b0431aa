"""The document as Markdown (images referenced relative to the report folder)."""
from __future__ import annotations

from typing import Callable

from dpdeploy.report.model import Document


def _dur(s) -> str:
    return "" if s is None else f"{s:.1f} s"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(doc: Document, src: Callable[[object], str], terminal_src: str | None) -> str:
    out = [f"# {doc.title}", "", f"Generated {doc.generated}.", "", f"**Status: {doc.headline}**", ""]
    for f in doc.failures:
        quoted = ["", "  ```text", *("  " + line for line in f.output.splitlines()), "  ```"] if f.output else []
        out += [f"- **{f.message}**", *quoted]
    out += [f"> {n}" for n in doc.notes] + [""] if doc.notes else []

    out += ["## 1. Procedure", "",
            "Run from a dpdeploy checkout; on a fresh host `python3 bootstrap.py <task>` creates the "
            "tools environment and runs `invoke <task>`.", ""]
    for s in doc.procedure:
        indent = "    " if "." in s.number else ""
        head = f"{indent}{s.number}. **{s.title}** — {s.status}" + (f", {_dur(s.duration_s)}" if s.duration_s is not None else "")
        out.append(head)
        if s.command:
            out.append(f"{indent}   `{s.command}`")
        if s.what:
            out.append(f"{indent}   {s.what}")
        out.append("")

    out += ["## 2. Environment", "", "| | |", "| --- | --- |"]
    out += [f"| {_cell(k)} | {_cell(v)} |" for k, v in doc.environment] + [""]

    out += ["## 3. Photos", ""]
    if not doc.photos:
        out += ["No photos: there is no predict run with outputs.", ""]
    for ph in doc.photos:
        out += [f"### {ph.name} — {ph.status}", ""]
        if ph.error:
            out += [f"**Error:** {ph.error}", ""]
        for _, caption, path in ph.figures:
            out += [f"![{caption}]({src(path)})", f"*{caption}*", ""]
        out += [f"- {k}: {v}" for k, v in ph.facts] + [""]

    out += ["## 4. Terminal", ""]
    if terminal_src:
        out += [f"The captured terminal of run `{doc.terminal_run}`:", "", f"![terminal]({terminal_src})", ""]
    else:
        out += ["No terminal capture was recorded.", ""]

    out += ["## 5. Timings and smoke tests", "", "| what | seconds |", "| --- | ---: |"]
    out += [f"| {_cell(k)} | {v:.2f} |" for k, v in doc.timings] + [""]
    if not doc.suites:
        out += ["No smoke-test results (JUnit XML) in the run records.", ""]
    for s in doc.suites:
        out += [f"**{s.name}**: {s.tests} tests, {s.failures} failed, {s.errors} errors, {s.skipped} skipped "
                f"({s.time_s:.1f} s)", ""]
        out += [f"- {status}: `{name}`" + (f" — {msg}" if msg else "") for name, status, msg in s.cases] + [""]
    out += ["Run records: " + ", ".join(f"{k} `{v}`" for k, v in doc.runs) if doc.runs else "No run records.", ""]
    return "\n".join(out)
