"""Processes a killed run left running: pip, ninja and compilers carry its ``DPDEPLOY_RUN_TOKEN``
(``dpdeploy.runner``), so they are found by that token in ``/proc/<pid>/environ`` (never by name:
a token is unique to one run) and ended, group by group, before their folders are touched."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from dpdeploy.runner import TOKEN

PROC = Path("/proc")


def carrying(token: str, proc: Path = PROC) -> list[int]:
    """The pids whose environment holds ``DPDEPLOY_RUN_TOKEN=token`` (not this process)."""
    needle = f"{TOKEN}={token}".encode()
    found = []
    for entry in proc.iterdir() if token and proc.is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:   # gone, or not ours to read
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return sorted(found)


def end(token: str, grace: float = 5.0, proc: Path = PROC) -> list[int]:
    """SIGTERM every process carrying ``token`` (and its group), SIGKILL what is left after
    ``grace`` seconds; the pids that were found."""
    pids = carrying(token, proc)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in carrying(token, proc):
            for kill, target in ((os.killpg, _group(pid)), (os.kill, pid)):
                try:
                    if target:
                        kill(target, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        deadline = time.monotonic() + grace
        while carrying(token, proc) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not carrying(token, proc):
            break
    return pids


def _group(pid: int) -> int:
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return 0
    return 0 if group == os.getpgrp() else group   # never our own group
