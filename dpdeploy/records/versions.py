"""What is actually installed: versions read from the env and build stamps, and the facts.

Reads ``<prefix>/.dpdeploy-env.json`` (written by the env step) and
``<prefix>/.dpdeploy-build.json`` (written by the build step); either may be missing (not set
up yet, or a failed run), and then the row says so instead of guessing from the plan.
Keys read (the first one present wins):

- env stamp: ``torch``/``torchvision`` (or ``packages.{torch,torchvision}``), ``torch_cuda``
  (or ``cuda``; ``torch.version.cuda``), ``python``, ``profile``, ``lock_sha256``
- build stamp: ``detectron2_commit`` (or ``commit``), ``arch_list`` (or ``torch_cuda_arch_list``),
  ``compiled_archs`` (list or string), ``cache_key``
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

ENV_STAMP = ".dpdeploy-env.json"
BUILD_STAMP = ".dpdeploy-build.json"
MISSING = "not installed"


@dataclass(frozen=True)
class Version:
    name: str
    value: str
    source: str   # where the value was read, e.g. "<prefix>/.dpdeploy-env.json"


def read_stamp(path: Path) -> Optional[dict]:
    """A stamp as a dict; None when absent or unreadable (a half-written stamp never exists)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _first(data: Optional[dict], *keys: str) -> Optional[str]:
    for key in keys:
        value: Any = data
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value not in (None, "", []):
            return ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return None


def collect(prefix: str | Path, facts: Optional[dict] = None) -> list[Version]:
    """Installed versions in report order; ``facts`` is a facts dict (``Facts.to_dict()``)."""
    prefix = Path(prefix)
    env, build = read_stamp(prefix / ENV_STAMP), read_stamp(prefix / BUILD_STAMP)
    env_src, build_src = str(prefix / ENV_STAMP), str(prefix / BUILD_STAMP)
    rows = [
        ("Python (env)", env, env_src, ("python", "python_version")),
        ("torch", env, env_src, ("torch", "packages.torch")),
        ("torchvision", env, env_src, ("torchvision", "packages.torchvision")),
        ("CUDA (torch build)", env, env_src, ("torch_cuda", "cuda")),
        ("env lock sha256", env, env_src, ("lock_sha256",)),
        ("detectron2 commit", build, build_src, ("detectron2_commit", "commit")),
        ("TORCH_CUDA_ARCH_LIST", build, build_src, ("arch_list", "torch_cuda_arch_list")),
        ("compiled archs", build, build_src, ("compiled_archs",)),
    ]
    out = []
    for name, data, src, keys in rows:
        value = _first(data, *keys)
        if value is None:
            value, src = (MISSING, src) if data is None else ("not recorded", src)
        out.append(Version(name, value, src))
    facts = facts or {}
    gpus = "; ".join(f"{g['name']} (sm_{g['compute_capability']})" for g in facts.get("gpus", ())) or "none"
    out.append(Version("NVIDIA driver", facts.get("driver_version") or "none", "facts.json"))
    out.append(Version("GPUs", gpus, "facts.json"))
    return out


def to_dicts(versions: list[Version]) -> list[dict]:
    return [asdict(v) for v in versions]
