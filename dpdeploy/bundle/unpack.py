"""`invoke setup --offline --bundle FILE`: the bundle is read in full and refused (one line: what
is wrong) before anything is written when it is incomplete, tampered with (a sha256 or size that
differs from its manifest, a file the manifest does not list) or made for another profile, lock,
Python, platform or detectron2 pin; then unpacked into ``<home>/bundles/<manifest sha256[:16]>``."""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from dpdeploy.bundle.make import REQUIREMENTS, BundleError, missing_pins
from dpdeploy.envs.lockfile import Lock
from dpdeploy.fsutil import sha256_file
from dpdeploy.records import bundle_manifest as bm
from dpdeploy.records.schema import RecordError

NEXT = "make it again with `invoke bundle` on a connected host of the same platform"


@dataclass(frozen=True)
class Unpacked:
    root: Path
    manifest: bm.BundleManifest
    manifest_sha256: str

    @property
    def wheels(self) -> Path:
        return self.root / "wheels"

    @property
    def requirements(self) -> Path:
        return self.root / REQUIREMENTS

    @property
    def source(self) -> Path:
        return self.root / self.manifest.of_kind("source")[0].path

    @property
    def weights(self) -> Optional[Path]:
        found = self.manifest.of_kind("weights")
        return self.root / found[0].path if found else None


def _refuse(bundle: Path, what: str) -> BundleError:
    return BundleError(f"bundle {bundle} refused: {what}; next: {NEXT}")


def _read_manifest(tar: tarfile.TarFile, bundle: Path) -> tuple[bm.BundleManifest, str]:
    try:
        member = tar.getmember(bm.FILE)
    except KeyError:
        raise _refuse(bundle, f"incomplete, no {bm.FILE}") from None
    data = tar.extractfile(member).read()
    try:
        return bm.loads(data, str(bundle)), bm.sha256(data)
    except RecordError as err:
        raise BundleError(str(err)) from None


def _expect(manifest: bm.BundleManifest, bundle: Path, lock: Lock, python_version: str, machine: str, pin: str):
    mm = ".".join(python_version.split(".")[:2])
    for what, made, here in (("profile", manifest.profile, lock.profile), ("Python", manifest.python, mm),
                             ("platform", manifest.platform, f"linux_{machine}"),
                             ("detectron2 commit", manifest.detectron2_commit, pin)):
        if made != here:
            raise _refuse(bundle, f"made for {what} {made}, this deployment is {what} {here}")
    if manifest.lock_sha256 != lock.sha256:
        raise _refuse(bundle, f"made from another {manifest.lock} (sha256 {manifest.lock_sha256[:12]}, "
                              f"this checkout's is {lock.sha256[:12]})")
    for kind in ("requirements", "source"):
        if len(manifest.of_kind(kind)) != 1:
            raise _refuse(bundle, f"incomplete, it must list exactly one {kind} file")
    missing = missing_pins(lock, [Path(f.path).name for f in manifest.of_kind("wheel")])
    if missing:
        raise _refuse(bundle, f"incomplete, no wheel for {', '.join(missing[:5])}"
                              + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))


def check(bundle: Path, lock: Lock, python_version: str, machine: str, pin: str) -> tuple[bm.BundleManifest, str]:
    """The manifest and its sha256 when every file is there and intact; BundleError otherwise. Writes nothing."""
    if not bundle.is_file():
        raise BundleError(f"bundle {bundle} not found; next: pass the file `invoke bundle --out` wrote")
    try:
        with tarfile.open(bundle, "r:") as tar:
            manifest, digest = _read_manifest(tar, bundle)
            _expect(manifest, bundle, lock, python_version, machine, pin)
            listed = {f.path: f for f in manifest.files}
            seen = set()
            for member in tar:
                if member.name == bm.FILE:
                    continue
                entry = listed.get(member.name)
                if entry is None or not member.isfile():
                    raise _refuse(bundle, f"{member.name} is not in its manifest (tampered with)")
                sha = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
                if (sha, member.size) != (entry.sha256, entry.size):
                    raise _refuse(bundle, f"{member.name} has sha256 {sha[:12]}, its manifest says "
                                          f"{entry.sha256[:12]} (tampered with or damaged)")
                seen.add(member.name)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _refuse(bundle, f"not a readable bundle archive ({exc})") from None
    absent = sorted(set(listed) - seen)
    if absent:
        raise _refuse(bundle, f"incomplete, {len(absent)} listed file(s) missing: {', '.join(absent[:3])}")
    return manifest, digest


def unpack(bundle: Path, manifest: bm.BundleManifest, digest: str, home: Path) -> Unpacked:
    """Extract a checked bundle once (a finished folder is reused), each file's sha256 checked again."""
    root = home / "bundles" / digest[:16]
    done = Unpacked(root, manifest, digest)
    if (root / bm.FILE).is_file():
        return done
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}-"))
    try:
        with tarfile.open(bundle, "r:") as tar:
            tar.extractall(tmp, members=[m for m in tar if m.isfile()], filter="data")
        for entry in manifest.files:
            if sha256_file(tmp / entry.path) != entry.sha256:
                raise _refuse(bundle, f"{entry.path} changed while it was unpacked")
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return done
