"""Run records: one folder per run with facts, plan, step results and logs.

The report and ``verify`` read this; nothing re-derives it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from dpdeploy.fsutil import atomic_write_json


@dataclass
class RunRecord:
    folder: Path

    @classmethod
    def create(cls, home: str | Path, kind: str, now: Optional[float] = None) -> "RunRecord":
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

    @classmethod
    def latest(cls, home: str | Path, kind: str = "") -> Optional["RunRecord"]:
        runs = sorted(p for p in (Path(home) / "runs").glob(f"*-{kind}*" if kind else "*") if p.is_dir())
        return cls(runs[-1]) if runs else None

    @property
    def id(self) -> str:
        return self.folder.name

    def log_path(self, name: str) -> Path:
        return self.folder / "logs" / f"{name}.log"

    def write(self, name: str, obj: Any) -> Path:
        if hasattr(obj, "to_dict"):
            obj = obj.to_dict()
        return atomic_write_json(self.folder / f"{name}.json", obj)

    def read(self, name: str) -> Any:
        return json.loads((self.folder / f"{name}.json").read_text(encoding="utf-8"))

    def add_step(self, result: Any) -> None:
        """Append a step result to steps.json (rewritten atomically each time)."""
        path = self.folder / "steps.json"
        steps = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
        steps.append(result.to_dict() if hasattr(result, "to_dict") else result)
        atomic_write_json(path, steps)
