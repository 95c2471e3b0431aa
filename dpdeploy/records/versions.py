"""What is actually installed, for the report's environment table: read from the env and build
stamps (through their record modules) and the facts. A missing stamp says "not installed"; a
CPU build says "none (CPU build)" where that is the truth; nothing is guessed from the plan."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from dpdeploy.records import build_stamp, env_stamp
from dpdeploy.records.schema import RecordError

MISSING = "not installed"


@dataclass(frozen=True)
class Version:
    name: str
    value: str
    source: str   # where the value was read, e.g. "<prefix>/.dpdeploy-env.json"


def collect(prefix: str | Path, facts: dict | None = None) -> list[Version]:
    """Installed versions in report order; ``facts`` is a facts dict (``Facts.to_dict()``)."""
    env_src, build_src = str(env_stamp.path(prefix)), str(build_stamp.path(prefix))
    out: list[Version] = []
    try:
        env = env_stamp.read(prefix)
    except RecordError as err:
        env, out = None, [Version("env stamp", f"unreadable: {err}", env_src)]
    env_rows = [("Python (env)", "python"), ("torch", "torch"), ("torchvision", "torchvision"),
                ("CUDA (torch build)", "torch_cuda"), ("env lock sha256", "lock_sha256")]
    for name, attr in env_rows:
        value = getattr(env, attr) if env else MISSING
        if env and attr == "torch_cuda" and not value:
            value = "none (CPU-only torch)"
        out.append(Version(name, value or "not recorded", env_src))
    if env and env.host_python:
        out.append(Version("torch from", f"the host: {env.host_python} (not installed by dpdeploy)", env_src))
    if env and env.bundle:
        out.append(Version("installed from", f"offline bundle, manifest sha256 {env.bundle[:16]}", env_src))
    try:
        built = build_stamp.read(prefix)
    except RecordError as err:
        built, out = None, [*out, Version("build stamp", f"unreadable: {err}", build_src)]
    out += [Version("detectron2 commit", (built.commit or "unknown (unpinned source)") if built else MISSING, build_src),
            Version("TORCH_CUDA_ARCH_LIST", built.arch_list_text() if built else MISSING, build_src),
            Version("compiled archs", built.archs_text() if built else MISSING, build_src)]
    facts = facts or {}
    gpus = "; ".join(f"{g['name']} (sm_{g['compute_capability']})" for g in facts.get("gpus", ())) or "none"
    out.append(Version("NVIDIA driver", facts.get("driver_version") or "none", "facts.json"))
    out.append(Version("GPUs", gpus, "facts.json"))
    return out


def to_dicts(versions: list[Version]) -> list[dict]:
    return [asdict(v) for v in versions]

