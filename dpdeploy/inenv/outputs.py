"""The per-image output contract shared by the predict parent and the in-env worker: visualizer
names, the default input size, and safe, unique output folder names. Standard library only."""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Sequence

# Visualizer names as in DensePose's apply_net.py (ShowAction.VISUALIZERS): the chart-based ones.
VISUALIZERS = ("dp_contour", "dp_segm", "dp_u", "dp_v", "bbox")
DEFAULT_VIS = ("dp_contour", "bbox")
# Longest image side fed to the model. The R-CNN resizes to at most 1333 px itself
# (detectron2 INPUT.MAX_SIZE_TEST); larger inputs only cost decoding and drawing time.
DEFAULT_MAX_SIZE = 2048
# Inputs decoded as videos (PyAV): per-frame IUV data and an overlay video instead of PNGs.
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts"})
VIDEO_OVERLAY = "overlay.mp4"


def safe_name(text: str) -> str:
    """``text`` reduced to ASCII letters, digits, '-', '_' and '.' (no leading dot)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_text).strip("._")
    return cleaned[:80] or "image"


def safe_stem(name: str) -> str:
    """A file name without its suffix, made safe (``safe_name``)."""
    return safe_name(Path(name).stem or Path(name).name)


def unique_stems(names: Sequence[str]) -> list[str]:
    """One output folder per input, unique even on case-insensitive filesystems. A name with
    folders (``trip/day1/img.jpg``) keeps them (``trip/day1/img``), each part made safe."""
    taken: set[str] = set()
    stems = []
    for name in names:
        parts = [p for p in Path(name).parts if p not in ("/", "..", ".")]
        base = "/".join([*(safe_name(p) for p in parts[:-1]), safe_stem(parts[-1] if parts else name)])
        stem, n = base, 1
        while stem.lower() in taken:
            n += 1
            stem = f"{base}-{n}"
        taken.add(stem.lower())
        stems.append(stem)
    return stems
