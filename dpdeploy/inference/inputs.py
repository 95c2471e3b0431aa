"""What `invoke predict` runs on and draws: inputs expanded to files, safe output names, the
visualizer names. Standard library only: the parent (tools venv) and the in-env worker share it.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

# Visualizer names as in DensePose's apply_net.py (ShowAction.VISUALIZERS): the chart-based ones.
VISUALIZERS = ("dp_contour", "dp_segm", "dp_u", "dp_v", "bbox")
DEFAULT_VIS = ("dp_contour", "bbox")
# Longest image side fed to the model. The R-CNN resizes to at most 1333 px itself
# (detectron2 INPUT.MAX_SIZE_TEST); larger inputs only cost decoding and drawing time.
DEFAULT_MAX_SIZE = 2048

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


def safe_stem(name: str) -> str:
    """A file name reduced to ASCII letters, digits, '-', '_' and '.' (no leading dot)."""
    stem = Path(name).stem or Path(name).name
    ascii_text = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_text).strip("._")
    return cleaned[:80] or "image"


def unique_stems(paths: Sequence[str]) -> list[str]:
    """One output folder name per input, unique even on case-insensitive filesystems."""
    taken: set[str] = set()
    stems = []
    for path in paths:
        base = safe_stem(path)
        stem, n = base, 1
        while stem.lower() in taken:
            n += 1
            stem = f"{base}-{n}"
        taken.add(stem.lower())
        stems.append(stem)
    return stems
