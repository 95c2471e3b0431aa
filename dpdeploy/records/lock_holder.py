"""``<home>/state.lock.json``: who holds the state root (pid, command, since, the run token its
children carry). Written by the holder after it took ``state.lock``, removed when it lets go; one
left behind names a run that was killed (``dpdeploy.state.lock`` reads it to end its orphans)."""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from dpdeploy.records import schema

VERSION = 1
NAME = "state.lock.json"


@dataclass
class Holder:
    pid: int
    command: str
    since: float                   # epoch seconds
    token: str                     # DPDEPLOY_RUN_TOKEN of its children
    host: str = field(default_factory=socket.gethostname)

    def describe(self, now: float | None = None) -> str:
        age = max(0, int((now or time.time()) - self.since))
        when = time.strftime("%H:%M:%S", time.localtime(self.since))
        return f"pid {self.pid} (`{self.command}`, since {when}, {age // 60} min {age % 60} s ago)"


def path(home: str | os.PathLike) -> Path:
    return Path(home) / NAME


def write(home: str | os.PathLike, holder: Holder) -> Path:
    return schema.write(path(home), holder, VERSION)


def read(home: str | os.PathLike) -> Holder | None:
    """The holder record; None when there is none or it cannot be read (it is advisory)."""
    try:
        held = schema.load(Holder, path(home), VERSION, "lock holder", "it is rewritten by the next command")
    except (schema.RecordError, TypeError):
        return None
    typed = held is not None and isinstance(held.pid, int) and isinstance(held.since, (int, float)) and \
        all(isinstance(v, str) for v in (held.command, held.token, held.host))
    return held if typed else None


def remove(home: str | os.PathLike) -> None:
    path(home).unlink(missing_ok=True)
