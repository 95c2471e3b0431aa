"""The download bar (rich, on stderr) of `invoke weights` and the weights step; a no-op when disabled."""
from __future__ import annotations

import contextlib
from typing import Iterator

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                           TransferSpeedColumn)

from dpdeploy.inference.weights import Progress as ProgressFn


@contextlib.contextmanager
def transfer_bar(label: str, enabled: bool = True) -> Iterator[ProgressFn]:
    """Yield a ``(done, total)`` callback that drives a download bar on stderr."""
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not enabled) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
