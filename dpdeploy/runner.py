"""The one module that runs external commands.

Everything else takes a ``Runner`` (a callable) so that tests can inject canned output.
A tool that is not installed yields ``None``, never an exception.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence


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
        proc = subprocess.run(
            [exe, *argv[1:]],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=None if env is None else dict(env),
            cwd=cwd,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return Completed(tuple(argv), proc.returncode, proc.stdout, proc.stderr)


def stream(
    argv: Sequence[str],
    *,
    log_path: str,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[str] = None,
    echo: Callable[[str], None] = lambda line: None,
) -> int:
    """Run a long command, appending every output line to ``log_path`` and to ``echo``.

    Returns the exit status (127 when the program is missing).
    """
    with open(log_path, "a", encoding="utf-8", errors="replace") as log:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                env=None if env is None else dict(env),
                cwd=cwd,
            )
        except OSError as exc:
            log.write(f"{argv[0]}: {exc}\n")
            return 127
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            echo(line.rstrip("\n"))
        return proc.wait()
