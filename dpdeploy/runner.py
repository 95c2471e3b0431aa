"""The one module that runs external commands.

Everything else takes a ``Runner`` (a callable) so that tests can inject canned output.
A tool that is not installed yields ``None``, never an exception.

Every child starts in its own process group (a Ctrl-C or SIGTERM to the parent does not reach
pip, ninja and the compilers on its own) and the whole group is ended when the parent stops
waiting for it: on a timeout, an exception, Ctrl-C or SIGTERM. Children inherit the
``DPDEPLOY_RUN_TOKEN`` of the command that holds the state root, so the next run can find and end
what a ``kill -9``'d run left behind (``dpdeploy.state.orphans``).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

TOKEN = "DPDEPLOY_RUN_TOKEN"
GRACE_S = 10.0   # SIGTERM, then this long, then SIGKILL
_LIVE: set[subprocess.Popen] = set()   # streamed children still running, from any thread
_LIVE_LOCK = threading.Lock()
_ENDING = threading.Event()   # set by end_all: a child another thread starts after it is ended at once


@dataclass(frozen=True)
class Completed:
    """What a finished command returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


Runner = Callable[..., Optional[Completed]]


def _env(env: Optional[Mapping[str, str]]) -> Optional[dict[str, str]]:
    """The child's environment; an explicit one still carries the run token."""
    if env is None:
        return None
    out = dict(env)
    if TOKEN in os.environ:
        out.setdefault(TOKEN, os.environ[TOKEN])
    return out


def end_group(proc: subprocess.Popen, grace: float = GRACE_S) -> None:
    """End ``proc``'s whole process group: SIGTERM, then SIGKILL after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            proc.wait(timeout=wait)
            try:   # the leader is gone; members (ninja's compilers) may not be
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
        except subprocess.TimeoutExpired:
            continue


def run(
    argv: Sequence[str],
    *,
    timeout: float = 60,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[str] = None,
) -> Optional[Completed]:
    """Run ``argv`` and capture its output; ``None`` if the program is not found or hangs."""
    exe = argv[0] if os.path.sep in argv[0] else shutil.which(argv[0])
    if exe is None or not os.access(exe, os.X_OK):
        return None
    try:
        proc = subprocess.Popen([exe, *argv[1:]], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace", env=_env(env), cwd=cwd,
                                start_new_session=True)
    except OSError:
        return None
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        end_group(proc, grace=2.0)
        return None
    except BaseException:
        end_group(proc, grace=2.0)
        raise
    return Completed(tuple(argv), proc.returncode, stdout, stderr)


def stream(
    argv: Sequence[str],
    *,
    log_path: str,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[str] = None,
    echo: Callable[[str], None] = lambda line: None,
) -> int:
    """Run a long command, appending every output line to ``log_path`` and to ``echo``.

    Returns the exit status (127 when the program is missing). If the parent is interrupted
    while it waits, the child's process group is ended before the exception goes on.
    """
    with open(log_path, "a", encoding="utf-8", errors="replace") as log:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                env=_env(env),
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            log.write(f"{argv[0]}: {exc}\n")
            return 127
        assert proc.stdout is not None
        with _LIVE_LOCK:
            _LIVE.add(proc)
            ending = _ENDING.is_set()
        try:
            if ending:   # the parent was interrupted while this thread was starting its child
                log.write(f"dpdeploy: interrupted; ending {argv[0]} (process group {proc.pid})\n")
                end_group(proc)
                return proc.wait()
            for line in proc.stdout:
                log.write(line)
                echo(line.rstrip("\n"))
            return proc.wait()
        except BaseException:
            log.write(f"dpdeploy: interrupted; ending {argv[0]} (process group {proc.pid})\n")
            end_group(proc)
            raise
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(proc)


def end_all() -> None:
    """End every streamed child still running, whichever thread waits for it (an interrupt is
    raised in the main thread only; a worker streamed from another thread would outlive it)."""
    with _LIVE_LOCK:
        _ENDING.set()
        live = list(_LIVE)
    for proc in live:
        end_group(proc)
