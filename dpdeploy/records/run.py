"""Run records: one folder per run (``<home>/runs/<id>``) with facts, plan, settings, the step
results (``steps.json``), what is installed (``versions.json``), logs and the outcome
(``result.json``). The report and ``verify`` read it; nothing re-derives it.

``result.json`` is written when the run starts (status "running") and again when it ends, so a
run killed on the way is never mistaken for a finished one.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dpdeploy.fsutil import atomic_write_json
from dpdeploy.records import schema

RESULT_VERSION = 1
STEPS = "steps.json"
RESULT = "result.json"
STATUSES = ("running", "done", "failed", "interrupted")


@dataclass
class StepResult:
    name: str
    status: str            # "done", "up-to-date", "skipped", "failed", "planned" (dry run)
    command: str = ""      # what ran, as a user could type it
    duration_s: float = 0.0
    output: str = ""       # the tail of the output, or a one-line summary
    detail: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunResult:
    """``result.json``: how the run ended."""

    kind: str                      # setup, env, build, predict, ...
    status: str                    # one of STATUSES
    profile: str = ""
    started: float = 0.0           # epoch seconds
    ended: float = 0.0
    steps: list[str] = field(default_factory=list)   # the steps it ran, in order
    error: str = ""
    pid: int = 0                   # the process that ran it (0: not recorded)

    @property
    def ok(self) -> bool:
        return self.status == "done"

    @property
    def effective_status(self) -> str:
        """``status``, except that "running" whose process is gone is "interrupted" (kill -9)."""
        return "interrupted" if self.status == "running" and not _alive(self.pid) else self.status


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class RunRecord:
    folder: Path

    @classmethod
    def create(cls, home: str | Path, kind: str, now: float | None = None) -> RunRecord:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        base = Path(home) / "runs"
        base.mkdir(parents=True, exist_ok=True)
        for n in range(1000):
            folder = base / (f"{stamp}-{kind}" + (f"-{n}" if n else ""))
            try:
                folder.mkdir()
                break
            except FileExistsError:
                continue
        (folder / "logs").mkdir()
        return cls(folder)

    @property
    def id(self) -> str:
        return self.folder.name

    def log_path(self, name: str) -> Path:
        return self.folder / "logs" / f"{name}.log"

    def write(self, name: str, obj: Any) -> Path:
        if hasattr(obj, "to_dict"):
            obj = obj.to_dict()
        return atomic_write_json(self.folder / f"{name}.json", obj)

    def add_step(self, result: StepResult) -> None:
        """Append a step result to steps.json (rewritten atomically each time)."""
        steps = [s.to_dict() for s in read_steps(self.folder)]
        atomic_write_json(self.folder / STEPS, [*steps, result.to_dict()])

    def write_result(self, result: RunResult) -> Path:
        return schema.write(self.folder / RESULT, result, RESULT_VERSION)


def read_steps(folder: str | Path) -> list[StepResult]:
    """The step results of a run, in order; [] before the first step ends."""
    try:
        data = json.loads((Path(folder) / STEPS).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise schema.RecordError(f"{Path(folder) / STEPS} is damaged ({exc})") from None
    if not isinstance(data, list) or not all(isinstance(s, dict) and "name" in s and "status" in s for s in data):
        raise schema.RecordError(f"{Path(folder) / STEPS} is damaged (not a list of step results)")
    names = {f for f in StepResult.__dataclass_fields__}
    return [StepResult(**{k: v for k, v in s.items() if k in names}) for s in data]


def read_result(folder: str | Path) -> RunResult | None:
    """How the run ended; None when it never wrote one; RecordError when damaged or outdated."""
    return schema.load(RunResult, Path(folder) / RESULT, RESULT_VERSION, "run result", "run the command again")


def mark_interrupted(folder: str | Path, why: str) -> bool:
    """Rewrite a dead run's "running" result as interrupted (ended: its last write); True if it did."""
    folder = Path(folder)
    try:
        result = read_result(folder)
    except schema.RecordError:
        return False
    if result is None or result.status != "running" or result.effective_status != "interrupted":
        return False
    last = max((p.stat().st_mtime for p in folder.rglob("*") if p.is_file()), default=result.started)
    result.status, result.error, result.ended = "interrupted", why, last
    RunRecord(folder).write_result(result)
    return True
