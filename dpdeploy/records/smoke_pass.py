"""The last passing smoke run, ``<prefix>/.dpdeploy-smoke.json``: written by the smoke suite's
runner when the suite passes, read by the setup pipeline's smoke step, which skips the suite
when nothing it depends on (the env and build stamps, the weights, the suite) has changed."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dpdeploy.records import schema

FILE = ".dpdeploy-smoke.json"
VERSION = 1


@dataclass(frozen=True)
class SmokePass:
    fingerprint: str     # sha256 over what the suite checked (see inference/smoke.py fingerprint)
    run: str             # the run folder whose suite passed
    junit: str
    summary: str         # "5 passed, 0 failed, ...; pipeline check without real weights"
    passed_at: str       # ISO 8601


def path(prefix: os.PathLike | str) -> Path:
    return Path(prefix) / FILE


def write(prefix: os.PathLike | str, record: SmokePass) -> Path:
    return schema.write(path(prefix), record, VERSION)


def forget(prefix: os.PathLike | str) -> None:
    """The env changed (a repair): what the last pass confirmed no longer holds."""
    path(prefix).unlink(missing_ok=True)


def read(prefix: os.PathLike | str) -> SmokePass | None:
    """The last pass; None when there is none; RecordError when damaged or outdated."""
    return schema.load(SmokePass, path(prefix), VERSION, "smoke record", "invoke smoke")
