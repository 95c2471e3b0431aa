"""The deployment document as data: a pure function of the loaded run records.

Renderers (markdown, HTML, PDF, terminal) only lay this out; every fact here comes from a
run record, nothing is typed by hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from dpdeploy.report.ansi import parse, plain
from dpdeploy.report.runs import Photo, RunData, Suite

# The overlays and charts shown per photo, in order, with their captions.
FIGURES = (
    ("input", "original"),
    ("dp_contour", "DensePose chart contours (dp_contour)"),
    ("dp_segm", "body-part segmentation (dp_segm)"),
    ("dp_u", "U chart coordinate (dp_u)"),
    ("dp_v", "V chart coordinate (dp_v)"),
)


@dataclass(frozen=True)
class ProcStep:
    number: str
    title: str
    command: str
    what: str
    status: str
    duration_s: Optional[float]


@dataclass(frozen=True)
class Failure:
    where: str
    message: str
    output: str      # quoted run output: plain text (the terminal's colour codes are removed)

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", plain(parse(self.output)) if "\x1b" in self.output else self.output)


@dataclass(frozen=True)
class PhotoSection:
    name: str
    status: str
    error: str
    figures: list[tuple[str, str, Path]]   # (visualizer, caption, file)
    facts: list[tuple[str, str]]           # instances, scores, timings, notes


@dataclass(frozen=True)
class Document:
    title: str
    generated: str
    status: str                            # "OK", "FAILED", "INCOMPLETE"
    headline: str
    failures: list[Failure]
    notes: list[str]
    procedure: list[ProcStep]
    environment: list[tuple[str, str]]
    photos: list[PhotoSection]
    terminal_command: Optional[str]
    terminal_log: Optional[str]
    terminal_run: Optional[str]
    timings: list[tuple[str, float]]
    suites: list[Suite] = field(default_factory=list)
    runs: list[tuple[str, str]] = field(default_factory=list)   # (kind, folder)


def _step_summaries(plan: Optional[dict]) -> dict[str, str]:
    return {s["name"]: s["summary"] for s in (plan or {}).get("steps", [])}


def _proc_step(number: str, s: dict, summary: str, run: RunData) -> ProcStep:
    """A step as it was done: an up-to-date step shows the earlier run that did the work."""
    origin = run.origins.get(s["name"])
    if origin is not None:
        return ProcStep(number, s["name"], origin.step_command or "(internal: no command)",
                        f"{summary} — done in run {origin.run} (`{origin.command}`); later runs, "
                        f"{run.id} included, only confirmed it ({s.get('output', '')})", "done", origin.duration_s)
    note = f" — {s['output']}" if s.get("output") and s["status"] != "failed" else ""
    return ProcStep(number, s["name"], s.get("command") or "(internal: no command)", summary + note,
                    s["status"], s.get("duration_s"))


def _procedure(setup: Optional[RunData], predict: Optional[RunData], report_command: str) -> list[ProcStep]:
    steps: list[ProcStep] = []
    n = 0
    if setup:
        n += 1
        total = sum(s.get("duration_s") or 0 for s in setup.steps)
        failed = any(s.get("status") == "failed" for s in setup.steps)
        ended = (setup.result or {}).get("status")
        steps.append(ProcStep(str(n), "Deploy", setup.command or "invoke setup",
                              "probe the host, resolve the plan from env/matrix.yml, then run the steps below",
                              ended if ended in ("interrupted", "running") else "failed" if failed else "done", total))
        summaries = _step_summaries(setup.plan)
        ran = {s.get("name") for s in setup.steps}
        for i, s in enumerate(setup.steps, 1):
            steps.append(_proc_step(f"{n}.{i}", s, summaries.get(s["name"], ""), setup))
        later = [name for name in summaries if name not in ran]
        for i, name in enumerate(later, len(setup.steps) + 1):
            steps.append(ProcStep(f"{n}.{i}", name, "", summaries[name], "not run", None))
    if predict:
        n += 1
        summary = predict.summary or {}
        errors = [i for i in _inputs(summary) if i.get("status") != "ok"]
        steps.append(ProcStep(str(n), "Run DensePose on the photos", predict.command or "invoke predict",
                              "load the model once, run each photo, write overlays, IUV arrays and a summary",
                              "failed" if errors or not summary else "done", _total(summary)))
    n += 1
    steps.append(ProcStep(str(n), "Write this report", report_command,
                          "read the run records and render this document (Markdown, HTML, PDF)", "done", None))
    return steps


def _inputs(summary: dict) -> list[dict]:
    return list(summary.get("images") or [])


def _total(summary: dict) -> Optional[float]:
    t = summary.get("seconds")
    return float(t) if isinstance(t, (int, float)) else None


def weights_kind(summary: dict) -> str:
    return summary.get("weights_kind") or "unknown"


def _environment(setup: Optional[RunData], predict: Optional[RunData]) -> list[tuple[str, str]]:
    facts = (setup and setup.facts) or (predict and predict.facts) or {}
    plan = (setup and setup.plan) or (predict and predict.plan) or {}
    rows: list[tuple[str, str]] = []
    if facts:
        rows += [
            ("OS", f"{facts.get('os_name', '?')} (kernel {facts.get('kernel', '?')})"),
            ("CPU", f"{facts.get('machine', '?')}, {facts.get('cpu_count', '?')} cores"),
            ("RAM", f"{facts.get('mem_total_mib', 0) / 1024:.1f} GiB"),
        ]
    if plan:
        rows += [
            ("profile", f"{plan.get('profile')} — {plan.get('summary', '')}"),
            ("device (planned)", str(plan.get("device"))),
            ("compiler", f"gcc {plan.get('toolchain', {}).get('gcc_version', '?')}"),
            ("CUDA_HOME", str(plan.get("toolchain", {}).get("cuda_home") or "(CPU build)")),
            ("MAX_JOBS", str(plan.get("max_jobs"))),
        ]
    for v in (setup.versions if setup else []):
        rows.append((v["name"], v["value"]))
    if not (setup and setup.versions) and facts:
        gpus = "; ".join(f"{g['name']} (sm_{g['compute_capability']})" for g in facts.get("gpus", ())) or "none"
        rows += [("NVIDIA driver", facts.get("driver_version") or "none"), ("GPUs", gpus)]
    if predict and predict.summary:
        s = predict.summary
        rows += [("inference device", str(s.get("device", "?"))),
                 ("model", str(s.get("model") or s.get("config") or "?")),
                 ("weights", weights_kind(s))]
    return rows


def _photo(photo: Photo, entry: dict) -> PhotoSection:
    figures = [(v, caption, photo.images[v]) for v, caption in FIGURES if v in photo.images]
    r = photo.result
    facts: list[tuple[str, str]] = []
    if "instances" in r or "scores" in r:
        scores = r.get("scores") or [i.get("score") for i in r.get("instances", []) if isinstance(i, dict)]
        count = r.get("instances") if isinstance(r.get("instances"), int) else len(scores)
        shown = ", ".join(f"{s:.2f}" for s in scores if s is not None)
        facts.append(("people detected", f"{count}" + (f" (scores {shown})" if scores else "")))
    for k, v in (r.get("timings") or entry.get("timings") or {}).items():
        facts.append((k, f"{v:.2f} s" if isinstance(v, (int, float)) else str(v)))
    for note in r.get("notes", []):
        facts.append(("note", str(note)))
    status = entry.get("status") or ("ok" if figures else "missing")
    return PhotoSection(photo.stem, status, entry.get("error", ""), figures, facts)


def build(setup: Optional[RunData], predict: Optional[RunData], generated: str,
          report_command: str = "invoke report", notes: tuple[str, ...] = ()) -> Document:
    """The document for a setup run and a predict run (either may be None); ``notes`` go first."""
    failures: list[Failure] = []
    notes = list(notes)
    if setup and (setup.result or {}).get("status") in ("interrupted", "running"):
        state = setup.result["status"]
        failures.append(Failure(f"run {setup.id}", f"setup run {setup.id} is {state}: it did not finish",
                                setup.result.get("error") or "the steps after the last one listed never ran"))
    for run in (setup, predict):
        if run is None:
            continue
        for s in run.steps:
            if s.get("status") == "failed":
                failures.append(Failure(f"step {s.get('name')}", f"step `{s.get('name')}` failed ({run.id})",
                                        run.log_tails.get(s.get("name"), "") or s.get("output", "")))
    summary = (predict.summary if predict else None) or {}
    entries = {str(e.get("stem")): e for e in _inputs(summary)}
    for stem, e in entries.items():
        if e.get("status") != "ok":
            failures.append(Failure(f"photo {stem}", f"predict failed on `{stem}`", e.get("error", "")))
    for run in filter(None, (setup, predict)):
        failures += [Failure(f"run {run.id}", f"unreadable record in run {run.id}", p) for p in run.problems]
    for suite in (setup.suites if setup else []) + (predict.suites if predict else []):
        for name, status, message in suite.cases:
            if status in ("failed", "error"):
                failures.append(Failure(f"test {name}", f"smoke test `{name}` {status}", message))

    if setup is None:
        notes.append("No setup run was found: the procedure and environment below are incomplete. "
                     "Run `invoke setup` first.")
    elif any(s.get("status") == "planned" for s in setup.steps):
        notes.append(f"Setup run {setup.id} was a dry run: nothing was installed.")
    smoke_only = predict is None and setup is not None and bool(setup.smoke_photos)
    if smoke_only:
        notes.append(f"No predict run yet: the photos below are the smoke check's DensePose output on the sample "
                     f"photos ({setup.smoke_check or 'smoke check'}). Run `invoke predict <photo>` for your own.")
        if "without real weights" in setup.smoke_check:
            notes.append("Weights kind 'synthetic': these overlays check the pipeline (a checkpoint built from the "
                         "config so the detector fires) and are NOT a real DensePose estimate.")
    elif predict is None:
        notes.append("No predict run was found, so this report has no DensePose images. "
                     "Run `invoke predict <photo>` and then `invoke report` again.")
    elif predict.summary is None:
        failures.append(Failure("predict", f"predict run {predict.id} has no predict/summary.json",
                                (predict.terminal and predict.terminal[-2000:]) or ""))
    kind = weights_kind(summary) if summary else "real"
    if kind != "real":
        notes.append(f"Weights kind '{kind}': these overlays check the pipeline (synthetic weights are a checkpoint "
                     "built from the config so the detector fires) and are NOT a real DensePose estimate.")

    status = "FAILED" if failures else ("INCOMPLETE" if setup is None or (predict is None and not smoke_only)
                                        else "OK")
    if failures:
        headline = "FAILED: " + "; ".join(f.message for f in failures[:3]) + ("; …" if len(failures) > 3 else "")
    elif status == "INCOMPLETE":
        headline = "INCOMPLETE: " + ("no setup run" if setup is None else "no predict run")
    else:
        headline = "OK: every step succeeded" + (f" and {len(entries)} photo(s) were processed" if entries else "")
        if smoke_only:
            headline += f"; the smoke check drew DensePose on {len(setup.smoke_photos)} sample photo(s)"

    photos = [_photo(p, entries.get(p.stem, {})) for p in (predict.photos if predict else [])]
    if smoke_only:
        photos = [replace(_photo(p, {}), name=f"smoke check: {p.stem}") for p in setup.smoke_photos]
    timings = [(f"setup: {s.get('name')}", float(s.get("duration_s") or 0)) for s in (setup.steps if setup else [])]
    if predict and _total(summary) is not None:
        timings.append(("predict: total", _total(summary)))
    for ph in photos:
        for k, v in ph.facts:
            if v.endswith(" s"):
                timings.append((f"predict {ph.name}: {k}", float(v[:-2])))

    shot = predict if predict and predict.terminal else setup if setup and setup.terminal else None
    if shot is None:
        notes.append("No terminal capture (terminal.log) was found in the runs.")
    return Document(
        title="DensePose deployment report",
        generated=generated,
        status=status,
        headline=headline,
        failures=failures,
        notes=notes,
        procedure=_procedure(setup, predict, report_command),
        environment=_environment(setup, predict),
        photos=photos,
        terminal_command=(shot.command or "") if shot else None,
        terminal_log=shot.terminal if shot else None,
        terminal_run=shot.id if shot else None,
        timings=timings,
        suites=(setup.suites if setup else []) + (predict.suites if predict else []),
        runs=[(k, str(r.folder)) for k, r in (("setup", setup), ("predict", predict)) if r],
    )
