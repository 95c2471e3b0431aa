"""The shared rules of every on-disk record: a ``schema_version`` field, atomic writes, and a
clear ``RecordError`` (which file, what is wrong, the next command) instead of a KeyError."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, TypeVar

from dpdeploy.fsutil import atomic_write_json

T = TypeVar("T")
VERSION_KEY = "schema_version"


class RecordError(Exception):
    """A record exists but cannot be read: damaged, or written by another dpdeploy version."""


def dump(record: Any, version: int) -> dict[str, Any]:
    """A record dataclass as JSON data, its schema version first."""
    return {VERSION_KEY: version, **dataclasses.asdict(record)}


def write(path: os.PathLike | str, record: Any, version: int) -> Path:
    return atomic_write_json(path, dump(record, version))


def load(cls: type[T], path: os.PathLike | str, version: int, kind: str, next_step: str) -> T | None:
    """The record at ``path`` as ``cls``; None when there is no file; RecordError when it is
    damaged, of another schema version, or lacks a field ``cls`` requires."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RecordError(f"{kind} {path} cannot be read ({exc.strerror}); next: {next_step}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RecordError(f"{kind} {path} is damaged (not JSON: {exc}); next: {next_step}") from None
    return parse(cls, data, version, f"{kind} {path}", next_step)


def parse(cls: type[T], data: Any, version: int, what: str, next_step: str) -> T:
    """``data`` (already loaded JSON) as ``cls``, with the same checks as ``load``."""
    if not isinstance(data, dict):
        raise RecordError(f"{what} is damaged (a JSON {type(data).__name__}, not an object); next: {next_step}")
    found = data.get(VERSION_KEY)
    if found != version:
        origin = "an older dpdeploy (no schema version)" if found is None else f"schema version {found!r}"
        raise RecordError(f"{what} was written by {origin}; this dpdeploy reads version {version}; next: {next_step}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    required = [n for n, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in data]
    if missing:
        raise RecordError(f"{what} lacks {', '.join(missing)} (damaged); next: {next_step}")
    return cls(**{k: v for k, v in data.items() if k in fields})
