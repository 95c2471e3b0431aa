"""What an interrupted run leaves in the state root, and the sweep that removes it. Only the
holder of the state lock sweeps, so nothing here can belong to a live run."""
from __future__ import annotations

import shutil
from pathlib import Path

# (folder under the state root, glob, what it is): every temp name the engine makes there
DEBRIS = (
    ("tmp", "*", "a build's private copy of the source (build/wheels.py)"),
    ("cache/wheels", ".*", "a wheel-cache entry being built or replaced (build/cache.py)"),
    ("cache/src", ".unpack-*", "a source archive being unpacked (build/source.py)"),
    ("cache/src", ".clone-*", "a git clone in progress (build/source.py)"),
    ("cache/src", ".copy-*", "a source folder being copied (build/source.py)"),
    ("cache/weights", ".synthetic-*", "a synthetic checkpoint being made (inenv/synthetic.py)"),
    ("cache/docker", "context-*", "an image build context being staged (cli/docker.py)"),
    ("cache/weights", ".*.tmp", "a half-written file (fsutil.atomic_write_*)"),
    ("cache/weights", "*.import", "a hand-copied checkpoint being imported (inference/weights.py)"),
    ("bundles", ".????????????????-*", "an offline bundle being unpacked (bundle/unpack.py)"),
    (".", ".*.tmp", "a half-written file (fsutil.atomic_write_*)"),
)


def tmp_root(home: str | Path) -> Path:
    """Where builds make their temp trees: inside the state root, so the sweep can find them."""
    return Path(home) / "tmp"


def find(home: str | Path) -> list[Path]:
    home = Path(home)
    return sorted({p for folder, pattern, _ in DEBRIS for p in (home / folder).glob(pattern)})


def sweep(home: str | Path) -> list[str]:
    """Remove the debris; one line per entry removed (path and size)."""
    removed = []
    for path in find(home):
        size = _size(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        if not path.exists():
            removed.append(f"{path} ({size // (1 << 20)} MiB)")
    return removed


def _size(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
