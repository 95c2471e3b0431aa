"""What `invoke predict` runs on: input specs expanded to files (the parent, in the tools venv)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

# Suffixes a folder is scanned for (the formats Pillow reads that photos come in). Files named
# on the command line are always tried, whatever their suffix.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})


@dataclass
class Inputs:
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # folder entries that are not images by suffix


def split_specs(specs: Iterable[str]) -> list[str]:
    """`a.jpg,b dir` -> ["a.jpg", "b dir"]: invoke takes one positional string, commas separate
    several (a spec that exists as a path is kept whole, commas and all)."""
    out: list[str] = []
    for spec in specs:
        if Path(spec).expanduser().exists():
            out.append(spec)
        else:
            out.extend(part.strip() for part in spec.split(",") if part.strip())
    return out


def collect(specs: Sequence[str]) -> Inputs:
    """Expand folders (top level, sorted, hidden files ignored); keep files as given, even missing
    ones: those become per-file errors, not a refusal of the whole run."""
    found = Inputs()
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            for entry in sorted(path.iterdir()):
                if entry.name.startswith(".") or entry.is_dir():
                    continue
                (found.files if entry.suffix.lower() in IMAGE_SUFFIXES else found.skipped).append(str(entry))
        else:
            found.files.append(str(path))
    return found
