"""The manifest ``manifest.json`` at the top of an `invoke bundle` archive: what it was made for
(profile, lock, Python, platform, detectron2 pin) and every file it holds with its sha256 and
size. Written by ``dpdeploy.bundle.make``, checked by ``dpdeploy.bundle.unpack``; this module
alone knows its fields."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from dpdeploy.records import schema

FILE = "manifest.json"
VERSION = 1
NEXT = "make the bundle again with `invoke bundle` on a connected host"


@dataclass(frozen=True)
class BundleFile:
    path: str      # inside the archive: wheels/<name>.whl, source/<archive>, weights/<model>.pkl, requirements.txt
    kind: str      # "wheel", "requirements", "source" or "weights"
    sha256: str
    size: int


@dataclass(frozen=True)
class BundleManifest:
    profile: str
    lock: str            # env/locks/<profile>.txt, as committed where the bundle was made
    lock_sha256: str
    python: str          # major.minor the wheels are for (cp311)
    python_tag: str      # e.g. cp311
    platform: str        # e.g. linux_x86_64 (the machine the wheels are for)
    detectron2_commit: str
    model: str           # the weights' model name ("" when the bundle has none)
    weights_trust: str   # how the weights were trusted where the bundle was made ("sha256", "tofu", "")
    created: str
    files: tuple[BundleFile, ...]

    def of_kind(self, kind: str) -> list[BundleFile]:
        return [f for f in self.files if f.kind == kind]


def dumps(manifest: BundleManifest) -> bytes:
    return (json.dumps(schema.dump(manifest, VERSION), indent=2, sort_keys=True) + "\n").encode("utf-8")


def loads(data: bytes, where: str) -> BundleManifest:
    """The manifest of ``where``; RecordError when damaged or of another schema version."""
    try:
        raw: Any = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise schema.RecordError(f"bundle manifest in {where} is damaged (not JSON: {exc}); next: {NEXT}") from None
    found = schema.parse(BundleManifest, raw, VERSION, f"bundle manifest in {where}", NEXT)
    try:
        files = tuple(BundleFile(**f) for f in found.files)
    except TypeError as exc:
        raise schema.RecordError(f"bundle manifest in {where}: bad files entry ({exc}); next: {NEXT}") from None
    return BundleManifest(**{**found.__dict__, "files": files})


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
