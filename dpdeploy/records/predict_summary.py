"""The predict summary ``<out>/summary.json``: written by the predict parent after every image
(atomically), read by the terminal view, the report and the smoke suite. One entry per input:
``{input, stem, status: pending|ok|error, error?, instances?, frames?, notes?, timings?}`` (``frames``:
a video's). Version 2 adds ``precision``, ``batch_size`` and ``workers`` (one per device: ``{device,
images, exit}``); a version 1 summary reads as fp32, batch 1, no worker list."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from dpdeploy.fsutil import atomic_write_json, read_json
from dpdeploy.records import schema

FILE = "summary.json"
VERSION = 2
OLDER = (1,)   # versions read as this one, with the new fields' defaults


@dataclass
class PredictSummary:
    """``summary.json``: one entry per input, in input order; rewritten after every image."""

    model: str
    weights: str
    weights_kind: str
    device: str
    out: str
    images: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)
    run: str = ""
    command: str = ""
    config: str = ""
    model_load_s: Optional[float] = None
    seconds: float = 0.0
    worker_exit: Optional[int] = None
    fatal: str = ""
    notes: list[str] = field(default_factory=list)
    precision: str = "fp32"
    batch_size: int = 1
    workers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return sum(1 for i in self.images if i["status"] == "ok")

    @property
    def failed(self) -> int:
        return sum(1 for i in self.images if i["status"] == "error")

    @property
    def success(self) -> bool:
        return self.worker_exit == 0 and self.failed == 0 and not self.fatal

    def apply(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "ready":
            self.config, self.weights = event.get("config", ""), event.get("weights", self.weights)
            loads = [s for s in (self.model_load_s, event.get("load_s")) if s is not None]
            self.model_load_s = max(loads) if loads else None   # several workers: the slowest
            self.precision = event.get("precision", self.precision)
            self.batch_size = event.get("batch_size", self.batch_size)
            self.notes.extend(event.get("notes", []))
        elif kind == "fatal":
            self.fatal = event.get("error", "the worker failed")
        elif kind == "image":
            index = int(event["index"]) - 1
            if 0 <= index < len(self.images):
                entry = {"input": event.get("input"), "stem": event.get("stem"), "status": event.get("status", "error")}
                for key in ("error", "instances", "frames", "notes", "timings"):
                    if key in event:
                        entry[key] = event[key]
                self.images[index] = entry

    def lost(self, indices: Sequence[int], why: str) -> list[str]:
        """Inputs (0-based ``indices``) a worker never reported become errors that say why; their inputs."""
        gone = [self.images[i] for i in indices if self.images[i]["status"] == "pending"]
        for entry in gone:
            entry.update(status="error", error=f"not processed: {why}")
        return [e["input"] for e in gone]

    def finish(self, exit_code: int, seconds: float) -> None:
        """Inputs no worker reported become errors that say why."""
        self.worker_exit, self.seconds = exit_code, round(seconds, 3)
        self.lost(range(len(self.images)), self.fatal or f"the worker exited with status {exit_code} before this file")

    def to_dict(self) -> dict[str, Any]:
        return {**schema.dump(self, VERSION), "ok": self.ok, "failed": self.failed, "success": self.success}


def write(out: os.PathLike | str, summary: PredictSummary) -> Path:
    return atomic_write_json(Path(out) / FILE, summary.to_dict())


def read(out: os.PathLike | str) -> PredictSummary | None:
    """The summary in the output folder ``out``; None when there is none; RecordError when damaged."""
    path, next_step = Path(out) / FILE, "run invoke predict again"
    try:
        return schema.load(PredictSummary, path, VERSION, "predict summary", next_step)
    except schema.RecordError:
        data = read_json(path)
        if not isinstance(data, dict) or data.get(schema.VERSION_KEY) not in OLDER:
            raise
        return schema.parse(PredictSummary, {**data, schema.VERSION_KEY: VERSION}, VERSION, f"predict summary {path}",
                            next_step)
