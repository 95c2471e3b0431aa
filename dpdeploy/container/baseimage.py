"""A local Debian 12 base image without any registry: debootstrap (minbase) -> tar -> podman import.

Used by CI and the image tests (no Docker Hub here) and by `invoke docker.base-image`.
The debootstrap tarball is cached (default under /var/tmp, which survives reboots), so a
re-run only imports it (seconds). Each file is written under a temporary name and renamed.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable

from dpdeploy.container.engines import Engine, EngineError
from dpdeploy.runner import Runner, run, stream

SUITE = "bookworm"                         # Debian 12
MIRROR = "http://deb.debian.org/debian"    # Debian's own redirector (the default of debootstrap)
TAG = "localhost/debian:12"
CACHE = Path("/var/tmp/dpdeploy")


def tarball_path(cache: Path = CACHE, suite: str = SUITE) -> Path:
    return cache / f"debian-{suite}-minbase.tar.gz"


def debootstrap_argv(rootfs: Path, suite: str = SUITE, mirror: str = MIRROR) -> list[str]:
    return ["debootstrap", "--variant=minbase", suite, str(rootfs), mirror]


def tar_argv(rootfs: Path, out: Path) -> list[str]:
    # Numeric owners: the image's /etc/passwd, not the host's, names them.
    return ["tar", "--numeric-owner", "-C", str(rootfs), "-czf", str(out), "."]


def import_argv(engine: Engine, tarball: Path, tag: str = TAG) -> list[str]:
    if engine.name == "buildah":
        raise EngineError("buildah has no import; the base image is imported with podman (same storage flags)")
    return [*engine.base(), "import", str(tarball), tag]


def exists_argv(engine: Engine, tag: str = TAG) -> list[str]:
    return [*engine.base(), "image", "inspect", "--format", "{{.Id}}", tag]


def make_tarball(out: Path, log: Path, echo: Callable[[str], None] = print, suite: str = SUITE,
                 mirror: str = MIRROR) -> Path:
    """debootstrap into a temp dir, drop apt's caches, tar it to ``out`` (atomically)."""
    if shutil.which("debootstrap") is None:
        raise EngineError("debootstrap is not installed; next: apt-get install -y debootstrap")
    out.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        echo(f"  debootstrap {suite} minbase (log: {log})")
        if stream(debootstrap_argv(rootfs, suite, mirror), log_path=str(log)) != 0:
            raise EngineError(f"debootstrap {suite} failed; see {log} (needs root and access to {mirror})")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        part = out.with_name(out.name + ".part")
        if stream(tar_argv(rootfs, part), log_path=str(log)) != 0:
            part.unlink(missing_ok=True)
            raise EngineError(f"tar of the debootstrapped tree failed; see {log}")
        part.replace(out)
    return out


def ensure(engine: Engine, tag: str = TAG, cache: Path = CACHE, log: Path = CACHE / "base-image.log",
           runner: Runner = run, echo: Callable[[str], None] = print) -> str:
    """The image ``tag`` in ``engine``'s storage; made (or imported from the cached tarball) when missing."""
    have = runner(exists_argv(engine, tag), timeout=60)
    if have is not None and have.ok:
        return f"{tag} exists ({have.stdout.strip()[:19]})"
    tarball = tarball_path(cache)
    how = "cached tarball"
    if not tarball.is_file():
        make_tarball(tarball, log, echo)
        how = "new debootstrap"
    done = runner(import_argv(engine, tarball, tag), timeout=600)
    if done is None or not done.ok:
        raise EngineError(f"importing {tarball} as {tag} failed: {done.stderr.strip()[-500:] if done else 'podman missing'}")
    return f"{tag} imported from the {how} {tarball}"
