"""One command that changes a state root at a time (``filelock`` on ``<home>/state.lock``).

The holder writes who it is (``records/lock_holder.py``); a second command says who holds the
root and waits, or refuses with ``--no-wait``. The lock dies with its process (``flock``), so
whoever takes it next knows any run it finds unfinished is dead: it ends that run's orphaned
children, sweeps its debris, and marks its record interrupted, before anything else happens.
While held, SIGTERM and SIGHUP end the command the way Ctrl-C does (``Interrupted``), so
``finally`` blocks run, children are ended and the run record says interrupted.
"""
from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout

from dpdeploy.records import lock_holder, run
from dpdeploy.records.lock_holder import Holder
from dpdeploy.runner import TOKEN
from dpdeploy.state import debris, orphans

NAME = "state.lock"


class Busy(Exception):
    """Another live command holds the state root (exit status 2 with --no-wait)."""


class Unusable(Exception):
    """The state root is not a writable folder (exit status 2)."""


class Interrupted(SystemExit):
    """SIGTERM / SIGHUP while the lock is held (exit status 128 + signal)."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signal = signal.Signals(signum).name

    def __str__(self) -> str:
        return f"interrupted by {self.signal}"


@dataclass
class Held:
    holder: Holder
    ended: list[int] = field(default_factory=list)         # orphans of a killed run, ended
    swept: list[str] = field(default_factory=list)          # its debris, removed
    marked: list[str] = field(default_factory=list)         # its run records, marked interrupted
    waited_s: float = 0.0

    def notes(self) -> list[str]:
        out = []
        if self.ended:
            out.append(f"ended {len(self.ended)} process(es) a killed run left running: pid "
                       + ", ".join(map(str, self.ended)))
        if self.swept:
            out.append(f"removed {len(self.swept)} temp folder(s) an interrupted run left: " + "; ".join(self.swept))
        if self.marked:
            out.append("marked interrupted (their process is gone): run " + ", ".join(self.marked))
        return out


def _refusal(home: Path, other: Holder | None) -> Busy:
    who = other.describe() if other else "another dpdeploy command"
    return Busy(f"{home} is in use by {who}\n  why: one command at a time changes a state root (env, caches, "
                f"records)\n  next: wait for it to finish (run again without --no-wait to wait), or use "
                f"another state root (DPDEPLOY_HOME)")


def _interrupted_runs(home: Path) -> list[str]:
    """Run records still saying "running" while nobody holds the lock: their process is dead."""
    marked = []
    for folder in sorted((home / "runs").glob("*")) if (home / "runs").is_dir() else ():
        if run.mark_interrupted(folder, "the process was killed (found by the next command on this state root)"):
            marked.append(folder.name)
    return marked


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``Interrupted`` (as Ctrl-C raises KeyboardInterrupt), so cleanup runs."""
    def handler(signum, _frame):
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def hold(home: str | Path, command: str, *, wait: bool = True, echo: Callable[[str], None] = print,
         poll_s: float = 1.0) -> Iterator[Held]:
    """Hold ``home``'s lock for ``command``; Busy when taken and not ``wait``."""
    home = Path(home)
    try:
        home.mkdir(parents=True, exist_ok=True)
        (home / NAME).touch()
    except OSError as exc:
        why = "it is a file, not a folder" if home.is_file() else exc.strerror
        raise Unusable(f"the state root {home} cannot be used: {why}\n  why: every command that changes "
                       f"the deployment keeps its lock, caches and records there\n  next: point DPDEPLOY_HOME (or "
                       f"`dpdeploy: home:` in invoke.yaml) at a folder you can write") from None
    lock = FileLock(home / NAME, is_singleton=False)
    start = time.monotonic()
    try:
        lock.acquire(timeout=0)
    except Timeout:
        other = lock_holder.read(home)
        if not wait:
            raise _refusal(home, other) from None
        echo(f"waiting: {home} is in use by {other.describe() if other else 'another dpdeploy command'} "
             "(Ctrl-C stops waiting)")
        lock.acquire(poll_interval=poll_s)
    try:
        previous = lock_holder.read(home)
        held = Held(Holder(os.getpid(), command, time.time(), uuid.uuid4().hex), waited_s=time.monotonic() - start)
        if previous and previous.token:
            held.ended = orphans.end(previous.token)
        held.swept = debris.sweep(home)
        held.marked = _interrupted_runs(home)
        lock_holder.write(home, held.holder)
        token = os.environ.get(TOKEN)
        os.environ[TOKEN] = held.holder.token
        try:
            for line in held.notes():
                echo(f"    {line}")
            with signals_raise():
                yield held
        except BaseException:   # also a child started as the signal came, before its runner knew of it
            orphans.end(held.holder.token)
            raise
        finally:
            if token is None:
                os.environ.pop(TOKEN, None)
            else:
                os.environ[TOKEN] = token
            lock_holder.remove(home)
    finally:
        lock.release()
