"""The compiled-wheel cache: ``<home>/cache/wheels/<key>/`` with a manifest of sha256s.

An entry is built in a temp folder beside it and renamed into place, so it is either
complete or absent; an entry whose files do not match its manifest is treated as missing
(and replaced by the next store).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from dpdeploy.envs.site import TorchInfo
from dpdeploy.fsutil import sha256_file
from dpdeploy.plan.resolve import Plan

MANIFEST = "manifest.json"
# Bump when the build recipe changes in a way that changes the wheels (compile flags,
# compatibility fixes applied to the source); part of every key.
RECIPE = 1


def key_fields(identity: str, torch: TorchInfo, plan: Plan, machine: str, tree: str = "") -> dict[str, Any]:
    """What makes two builds' wheels interchangeable (``cache_key`` adds the recipe version): the
    source's commit (or identity) and a hash of its tree's content, torch, machine, archs."""
    return {"source": identity, "tree": tree, "python": torch.python, "torch": torch.torch, "torch_cuda": torch.torch_cuda,
            "machine": machine, "force_cuda": plan.force_cuda,
            "arch_list": plan.torch_cuda_arch_list if plan.force_cuda else ""}


def cache_key(fields: Mapping[str, Any]) -> str:
    """A readable, collision-safe folder name for the key fields."""
    blob = json.dumps({**fields, "recipe": RECIPE}, sort_keys=True).encode()
    ident = str(fields.get("source", "src")).replace(":", "-")[:12]
    return f"{ident}-{hashlib.sha256(blob).hexdigest()[:16]}"


def check(root: Path, key: str) -> tuple[Optional[list[Path]], str]:
    """(the entry's wheels, "") if complete and intact; (None, "") if there is no entry;
    (None, what is wrong) if the entry exists but is damaged (it is rebuilt and replaced)."""
    entry = root / key
    if not entry.exists():
        return None, ""
    try:
        wheels = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))["wheels"]
        paths = [entry / name for name in sorted(wheels)]
    except FileNotFoundError:
        return None, f"{entry} has no {MANIFEST}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"{entry / MANIFEST} is unreadable ({type(exc).__name__}: {exc})"
    if not paths:
        return None, f"{entry / MANIFEST} lists no wheels"
    for p in paths:
        if not p.is_file():
            return None, f"{p.name} is missing from {entry}"
        if sha256_file(p) != wheels[p.name]:
            return None, f"{p} does not match its sha256 in {MANIFEST} (changed or truncated)"
    return paths, ""


def lookup(root: Path, key: str) -> Optional[list[Path]]:
    """The entry's wheels if complete and intact, else None."""
    return check(root, key)[0]


def store(root: Path, key: str, fields: Mapping[str, Any], build: Callable[[Path], None]) -> list[Path]:
    """Run ``build(tmpdir)`` (it writes *.whl there), write the manifest, rename into place."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        build(tmp)
        wheels = {p.name: sha256_file(p) for p in sorted(tmp.glob("*.whl"))}
        if not wheels:
            raise RuntimeError(f"the build produced no wheels in {tmp}")
        (tmp / MANIFEST).write_text(json.dumps({"key": dict(fields), "recipe": RECIPE, "wheels": wheels},
                                               indent=2, sort_keys=True) + "\n", encoding="utf-8")
        entry = root / key
        if entry.exists():  # a corrupt or partial entry: move it aside, then drop it
            stale = Path(tempfile.mkdtemp(prefix=f".{key}.stale.", dir=root))
            os.replace(entry, stale / "entry")
            shutil.rmtree(stale)
        os.replace(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [root / key / name for name in sorted(wheels)]
