"""The project as a tarball for other hosts: what Ansible's densepose role unpacks there.

Only what a host needs to run ``bootstrap.py`` (the engine, the matrix and locks, the task
entry points); never the venv, git data, caches, tests or earlier reports. Members keep their
files' mtimes, so unpacking the same tree again changes nothing (``unarchive`` compares them).

    python3 -m dpdeploy.fleet.project_archive OUT.tar.gz     # run from the project root
"""
from __future__ import annotations

import io
import os
import sys
import tarfile
from pathlib import Path

from dpdeploy import paths
from dpdeploy.fsutil import atomic_write_bytes


# Top-level entries a host needs (our choice: the engine and its data, nothing else).
INCLUDE = ("bootstrap.py", "tasks.py", "pyproject.toml", "README.md", "dpdeploy", "env", "requirements")
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".swp", "~")


def project_files(root: Path = paths.ROOT) -> list[Path]:
    """The files to ship, relative to ``root``, sorted (so the tarball is the same each time)."""
    found: list[Path] = []
    for name in INCLUDE:
        top = root / name
        if top.is_file():
            found.append(Path(name))
            continue
        for folder, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
            found += [Path(folder, f).relative_to(root) for f in files if not f.endswith(SKIP_SUFFIXES)]
    return sorted(found)


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.mtime = int(info.mtime)   # whole seconds: no pax header, same bytes each time
    info.uname = info.gname = "root"
    return info


def write_bundle(dest: Path, root: Path = paths.ROOT) -> Path:
    """Write the tarball atomically; returns its path."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel in project_files(root):
            tar.add(root / rel, arcname=str(rel), recursive=False, filter=_normalized)
    return atomic_write_bytes(dest, buf.getvalue())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 -m dpdeploy.fleet.project_archive OUT.tar.gz")
    print(write_bundle(Path(sys.argv[1])))
