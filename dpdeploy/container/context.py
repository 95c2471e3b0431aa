"""The build context `invoke docker.build` hands to the engine: a staged copy, never the checkout.

``<dest>/`` gets the repository's files (``git ls-files``: tracked and untracked-but-not-ignored,
so no ``.venv``, no caches) and, when a detectron2 source is given, ``docker/d2src/<name>``:
a ``git archive`` of exactly the matrix's pinned commit (the commit travels in the tar's pax
header, where `invoke build` reads it back), or the given archive / directory as is.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from dpdeploy.runner import Runner, run
from dpdeploy.build.source import SourceError, kind_of

SKIP = {".git", ".venv", "__pycache__", ".pytest_cache"}
TOP_SKIP = {"build", "dist"}   # packaging output at the checkout's top (never dpdeploy/build, the engine's)
D2SRC = Path("docker") / "d2src"     # the Dockerfile's `COPY docker/d2src/ /src/`


def repo_files(root: Path, runner: Runner = run) -> list[str]:
    """Relative paths of the checkout's files (git's view; a plain tree minus SKIP otherwise)."""
    done = runner(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"], timeout=60)
    if done is not None and done.ok:
        return sorted({p for p in done.stdout.split("\0") if p and (root / p).is_file()})
    found = []
    for folder, dirs, files in os.walk(root):
        top = Path(folder) == root
        dirs[:] = [d for d in dirs if d not in SKIP and not (top and d in TOP_SKIP) and not d.endswith(".egg-info")]
        found += [str((Path(folder) / f).relative_to(root)) for f in files]
    return sorted(found)


def stage_repo(root: Path, dest: Path, runner: Runner = run) -> list[str]:
    """Copy the checkout's files into ``dest``; returns their relative paths."""
    files = repo_files(root, runner)
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)
    (dest / D2SRC).mkdir(parents=True, exist_ok=True)
    return files


def stage_source(spec: str, commit: str, dest: Path, runner: Runner = run) -> str:
    """Put the detectron2 source into ``dest/docker/d2src``; returns its path in the image (/src/...)."""
    out = dest / D2SRC
    out.mkdir(parents=True, exist_ok=True)
    path = Path(spec).expanduser().resolve()
    kind = kind_of(spec)
    if kind == "git" and "://" in spec:
        raise SourceError(f"--source {spec}: a URL is cloned inside the image by `invoke build`; pass nothing "
                          "for the matrix's repository, or a local clone / archive for an offline build")
    if kind == "git":
        has = runner(["git", "-C", str(path), "cat-file", "-e", f"{commit}^{{commit}}"], timeout=30)
        if has is None or not has.ok:
            raise SourceError(f"{path} does not contain the pinned commit {commit}; "
                              f"next: `git -C {path} fetch origin {commit}` or pass a source that has it")
        name = f"detectron2-{commit}.tar"
        made = runner(["git", "-C", str(path), "archive", "--format=tar", "--prefix=detectron2/",
                       "-o", str(out / name), commit], timeout=600)
        if made is None or not made.ok:
            raise SourceError(f"git archive of {commit} in {path} failed: {made.stderr.strip() if made else 'git missing'}")
    elif kind == "archive":
        name = path.name
        shutil.copy2(path, out / name)
    else:
        name = path.name
        shutil.copytree(path, out / name, symlinks=True, ignore=shutil.ignore_patterns(*SKIP, *TOP_SKIP))
    return f"/src/{name}"
