"""Read run folders (setup and predict) into plain data for the report; tolerant of gaps.

A missing file is ``None`` / empty, never an exception: a failed or half-finished run still
gets a report that says what is missing. The records are read through their modules
(``dpdeploy.records.run``, ``dpdeploy.records.predict_summary``); one that is damaged or from
another version becomes a problem the report shows (``RunData.problems``).
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from dpdeploy.records import predict_summary, run
from dpdeploy.records.schema import RecordError
from dpdeploy.records.terminal import COMMAND_NAME, LOG_NAME

VISUALIZERS = ("input", "dp_contour", "dp_segm", "dp_u", "dp_v", "bbox", "side_by_side")
LOG_TAIL_LINES = 40


@dataclass
class Photo:
    stem: str
    images: dict[str, Path]          # visualizer name ("input", "dp_contour", ...) -> file
    result: dict = field(default_factory=dict)


@dataclass
class Suite:
    name: str
    tests: int
    failures: int
    errors: int
    skipped: int
    time_s: float
    cases: list[tuple[str, str, str]]  # (test name, "passed"/"failed"/"error"/"skipped", message)


@dataclass(frozen=True)
class Origin:
    """The earlier run that did a step this run found up to date."""

    run: str             # run id
    command: str         # that run's command line
    step_command: str
    duration_s: float


@dataclass
class RunData:
    folder: Path
    facts: Optional[dict] = None
    plan: Optional[dict] = None
    steps: list[dict] = field(default_factory=list)
    result: Optional[dict] = None
    versions: list[dict] = field(default_factory=list)
    command: Optional[str] = None
    terminal: Optional[str] = None
    summary: Optional[dict] = None
    photos: list[Photo] = field(default_factory=list)
    suites: list[Suite] = field(default_factory=list)
    log_tails: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)   # records that could not be read
    origins: dict[str, Origin] = field(default_factory=dict)   # step -> the earlier run that did it
    smoke_photos: list[Photo] = field(default_factory=list)   # the smoke check's DensePose on the samples
    smoke_check: str = ""                                      # which check that was, in words

    @property
    def id(self) -> str:
        return self.folder.name


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _text(path: Path) -> Optional[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def read_junit(path: Path) -> list[Suite]:
    """JUnit XML (pytest --junitxml) -> suites; an unreadable file is skipped."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return []
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    out = []
    for s in suites:
        cases = []
        for case in s.iter("testcase"):
            name = f"{case.get('classname', '')}::{case.get('name', '')}".strip(":")
            status, message = "passed", ""
            for tag, label in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
                el = case.find(tag)
                if el is not None:
                    status, message = label, (el.get("message") or el.text or "").strip().splitlines()[0:1]
                    message = message[0] if message else ""
                    break
            cases.append((name, status, message))
        counts = {attr: int(s.get(attr, 0) or 0) for attr in ("tests", "failures", "errors", "skipped")}
        out.append(Suite(s.get("name", path.stem), counts["tests"] or len(cases), counts["failures"],
                         counts["errors"], counts["skipped"], float(s.get("time", 0) or 0), cases))
    return out


def _photos(base: Path, wanted: tuple[str, ...]) -> list[Photo]:
    """One photo per output folder (nested folders mirror nested inputs; the stem is the path
    below ``base``) that holds an image or a result."""
    if not base.is_dir():
        return []
    photos = []
    for sub in sorted(p for p in base.rglob("*") if p.is_dir()):
        stem = sub.relative_to(base).as_posix()
        images = {v: sub / f"{v}.png" for v in VISUALIZERS if (sub / f"{v}.png").is_file()}
        if (wanted and stem not in wanted) or not (images or (sub / "result.json").is_file()):
            continue
        photos.append(Photo(stem, images, _json(sub / "result.json") or {}))
    return photos


def _record(read, folder: Path, problems: list[str]):
    try:
        return read(folder)
    except RecordError as err:
        problems.append(str(err))
        return None


def origins(folder: Path, steps: list[dict]) -> dict[str, Origin]:
    """For each step this run found up to date, the newest earlier run (same state root) that did it."""
    pending = {s["name"] for s in steps if s["status"] == "up-to-date"}
    found: dict[str, Origin] = {}
    for other in sorted((p for p in folder.parent.iterdir() if p.is_dir() and p.name < folder.name), reverse=True):
        if not pending:
            break
        try:
            past = run.read_steps(other)
        except RecordError:
            continue
        for step in past:
            if step.name in pending and step.status == "done":
                found[step.name] = Origin(other.name, (_text(other / COMMAND_NAME) or "").strip(), step.command,
                                          step.duration_s)
                pending.discard(step.name)
    return found


def load(folder: str | Path, photos: tuple[str, ...] = ()) -> RunData:
    """Everything the report needs from one run folder; ``photos`` limits the photo stems."""
    folder = Path(folder)
    problems: list[str] = []
    steps = [s.to_dict() for s in _record(run.read_steps, folder, problems) or []]
    result = _record(run.read_result, folder, problems)
    # outputs under the run folder, or where --out sent them (the run keeps a copy of the summary)
    summary = _record(predict_summary.read, folder / "predict", problems) or \
        _record(predict_summary.read, folder, problems)
    outputs = folder / summary.out if summary else folder / "predict"   # an absolute out stays as it is
    tails = {}
    for step in steps:
        if step["status"] == "failed":
            log = _text(folder / "logs" / f"{step['name']}.log")
            if log:
                tails[step["name"]] = tail(log)
    done_by = origins(folder, steps)
    smoke = folder if (folder / "smoke" / "predict").is_dir() or "smoke" not in done_by \
        else folder.parent / done_by["smoke"].run   # a confirmed suite: its images are in the run that ran it
    return RunData(
        folder=folder,
        facts=_json(folder / "facts.json"),
        plan=_json(folder / "plan.json"),
        steps=steps,
        result=result.__dict__ | {"ok": result.ok, "status": result.effective_status} if result else None,
        versions=_json(folder / "versions.json") or [],
        command=(_text(folder / COMMAND_NAME) or "").strip() or None,
        terminal=_text(folder / LOG_NAME),
        summary=summary.to_dict() if summary else None,
        photos=_photos(outputs, photos),
        suites=[s for p in sorted(folder.rglob("*.xml")) if "junit" in p.name for s in read_junit(p)],
        log_tails=tails,
        problems=problems,
        origins=done_by,
        smoke_photos=_photos(smoke / "smoke" / "predict", ()),
        smoke_check=(_json(smoke / "smoke.json") or {}).get("check", ""),
    )


def _runs(home: str | Path, kind: str) -> list[Path]:
    base = Path(home) / "runs"
    found = [p for p in base.glob(f"*-{kind}") if p.is_dir()] + [p for p in base.glob(f"*-{kind}-[0-9]*") if p.is_dir()]
    return sorted(found, key=lambda p: p.name)


def interrupted(folder: Path) -> bool:
    """The run did not finish: a signal, a crash, or ``kill -9`` (still "running", its process gone)."""
    try:
        result = run.read_result(folder)
    except RecordError:
        return False
    return result is not None and result.effective_status == "interrupted"


def latest(home: str | Path, kind: str) -> Optional[Path]:
    """The newest ``<home>/runs/*-<kind>`` folder (ids sort by time) that was not interrupted:
    an unfinished run never stands for the deployment."""
    runs = [p for p in _runs(home, kind) if not interrupted(p)]
    return runs[-1] if runs else None


def skipped_interrupted(home: str | Path, kind: str, chosen: Optional[Path]) -> list[str]:
    """The interrupted runs newer than ``chosen`` (the report says it passed over them)."""
    return [p.name for p in _runs(home, kind) if (chosen is None or p.name > chosen.name) and interrupted(p)]
