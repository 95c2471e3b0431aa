"""What `invoke predict` runs on: input specs expanded to files (the parent, in the tools venv)."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from dpdeploy.inenv.outputs import VIDEO_SUFFIXES

# Suffixes a folder is scanned for (the formats Pillow reads that photos come in). Files named
# on the command line are always tried, whatever their suffix.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})
SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES


@dataclass
class Inputs:
    files: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)     # per file: its path below the folder given ("" for a file)
    skipped: list[str] = field(default_factory=list)   # "path: why" for each folder entry not processed


def split_specs(specs: Iterable[str]) -> list[str]:
    """`a.jpg,b dir` -> ["a.jpg", "b dir"]: invoke takes one positional string, commas separate
    several (a spec that exists as a path is kept whole, commas and all). An empty spec names
    nothing (not the current folder)."""
    out: list[str] = []
    for spec in specs:
        if spec.strip() and Path(spec).expanduser().exists():
            out.append(spec)
        else:
            out.extend(part.strip() for part in spec.split(",") if part.strip())
    return out


def collect(specs: Sequence[str]) -> Inputs:
    """Expand folders recursively (sorted; the path below the folder becomes the output name, so
    the output tree mirrors the input tree); keep files as given, even missing ones: those become
    per-file errors, not a refusal of the whole run. Entries not processed are listed with why."""
    found = Inputs()
    for spec in specs:
        path = Path(spec).expanduser()
        if not path.is_dir():
            found.files.append(str(path))
            found.names.append(path.name)
            continue
        for folder, dirs, files in os.walk(path):
            here = Path(folder)
            hidden = sorted(d for d in dirs if d.startswith("."))
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found.skipped += [f"{here / d}: hidden folder" for d in hidden]
            for name in sorted(files):
                entry = here / name
                if name.startswith("."):
                    found.skipped.append(f"{entry}: hidden file")
                elif entry.suffix.lower() not in SUFFIXES:
                    found.skipped.append(f"{entry}: not an image file name ({entry.suffix or 'no suffix'})")
                else:
                    found.files.append(str(entry))
                    found.names.append(entry.relative_to(path).as_posix())
    return found


# DensePose's test-time resize (shortest side 800, longest at most 1333): the model's work grows
# with the resized area, which depends only on the aspect ratio.
LONGEST_PER_SHORTEST = 1333 / 800
VIDEO_WEIGHT = 1000.0   # many frames: a video outweighs any photo


def work_estimate(path: str) -> float:
    """One input's model work relative to a square photo's, for dealing inputs over workers: a
    photo's resized area (1.0 to 1.67, from its header), a video's VIDEO_WEIGHT, 0 for a file
    that does not open (it fails at once)."""
    if Path(path).suffix.lower() in VIDEO_SUFFIXES:
        return VIDEO_WEIGHT
    from PIL import Image   # the header only: the pixels are decoded by the worker

    try:
        with warnings.catch_warnings(), Image.open(path) as img:
            warnings.simplefilter("ignore")
            width, height = img.size
    except Exception:   # missing, not an image, a decompression bomb: the worker reports it
        return 0.0
    return min(max(width, height) / max(1, min(width, height)), LONGEST_PER_SHORTEST)


def deal(weights: Sequence[float], parts: int) -> list[list[int]]:
    """Input indices dealt over ``parts`` workers so their summed weights are even: heaviest
    first, each to the lightest part (the one with fewer inputs on a tie); each part in input
    order. Equal weights deal round-robin."""
    loads = [(0.0, 0)] * parts
    dealt: list[list[int]] = [[] for _ in range(parts)]
    for index in sorted(range(len(weights)), key=lambda i: -weights[i]):
        k = min(range(parts), key=lambda p: loads[p])
        dealt[k].append(index)
        loads[k] = (loads[k][0] + weights[index], loads[k][1] + 1)
    return [sorted(part) for part in dealt]
