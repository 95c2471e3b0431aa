"""Terminal capture: tee this process's own output (with its ANSI colours) into a run record.

``invoke setup`` and ``invoke predict`` both use it, so every run folder has the same
``command.txt`` (the exact command line) and ``terminal.log`` (what the user saw) that the
report renders as a terminal screenshot. Output of child processes is captured when it goes
through Python (``runner.stream`` echoes each line via ``print``).
"""
from __future__ import annotations

import contextlib
import os
import shlex
import sys
from pathlib import Path
from typing import IO, Iterator, Sequence

from dpdeploy.fsutil import atomic_write_text

LOG_NAME = "terminal.log"
COMMAND_NAME = "command.txt"


def command_line(argv: Sequence[str] = ()) -> str:
    """The command as the user typed it: ``invoke setup --dry``, not ``/x/.venv/bin/invoke ...``."""
    argv = list(argv or sys.argv)
    return shlex.join([os.path.basename(argv[0]), *argv[1:]]) if argv else ""


class _Tee:
    """A text stream writing to the real stream and to the log; looks like the real one."""

    def __init__(self, stream: IO[str], log: IO[str]):
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        self._log.write(text)
        self._log.flush()
        return self._stream.write(text)

    def flush(self) -> None:
        self._log.flush()
        self._stream.flush()

    def __getattr__(self, name: str):  # isatty, encoding, fileno, ... of the real stream
        return getattr(self._stream, name)


@contextlib.contextmanager
def capture(folder: str | Path, command: str) -> Iterator[Path]:
    """Write ``command.txt``, then tee stdout and stderr into ``terminal.log`` until exit."""
    folder = Path(folder)
    atomic_write_text(folder / COMMAND_NAME, command + "\n")
    log_path = folder / LOG_NAME
    with open(log_path, "a", encoding="utf-8", errors="replace") as log:
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(saved[0], log), _Tee(saved[1], log)
        try:
            yield log_path
        finally:
            sys.stdout, sys.stderr = saved
