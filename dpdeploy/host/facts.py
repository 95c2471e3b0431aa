"""Facts: what a host is, as a frozen dataclass with a JSON round trip.

Only ``dpdeploy.host.probe`` fills these from a live machine; ``--facts FILE`` loads them
from JSON so any host can be planned from anywhere.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

SCHEMA = 1


class FactsError(ValueError):
    """A facts file that cannot be read."""


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    compute_capability: str  # "9.0"
    memory_mib: int


@dataclass(frozen=True)
class Tool:
    """An executable found on the host and the version it reported."""

    path: str
    version: str


@dataclass(frozen=True)
class CudaToolkit:
    """A system CUDA toolkit: its nvcc, its root, and whether library headers are there."""

    nvcc: Tool
    home: str
    has_library_headers: bool  # cusparse.h & co; absent in nvcc-only installs


@dataclass(frozen=True)
class Facts:
    os_id: str  # "debian", "ubuntu", ...
    os_version: str  # "12", "24.04"
    os_name: str  # PRETTY_NAME
    kernel: str
    system: str  # "Linux"
    machine: str  # "x86_64"
    cpu_count: int
    mem_total_mib: int
    disk_path: str
    disk_free_mib: int
    pythons: tuple[Tool, ...] = ()
    compilers: tuple[Tool, ...] = ()  # gcc executables (g++ beside each)
    cuda: Optional[CudaToolkit] = None
    driver_version: Optional[str] = None
    gpus: tuple[Gpu, ...] = ()
    gpu_source: Optional[str] = None  # "nvml", "nvidia-smi" or None
    notes: tuple[str, ...] = field(default=())
    schema: int = SCHEMA

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Facts":
        try:
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(data) - known)
            if unknown:
                raise FactsError(f"unknown facts keys: {', '.join(unknown)}")
            cuda = data.get("cuda")
            return cls(
                **{k: v for k, v in data.items() if k not in {"pythons", "compilers", "cuda", "gpus", "notes"}},
                pythons=tuple(Tool(**t) for t in data.get("pythons", ())),
                compilers=tuple(Tool(**t) for t in data.get("compilers", ())),
                cuda=None if cuda is None else CudaToolkit(
                    nvcc=Tool(**cuda["nvcc"]), home=cuda["home"], has_library_headers=cuda["has_library_headers"]
                ),
                gpus=tuple(Gpu(**g) for g in data.get("gpus", ())),
                notes=tuple(data.get("notes", ())),
            )
        except (TypeError, KeyError) as exc:
            raise FactsError(f"malformed facts: {exc}") from exc

    @classmethod
    def load(cls, path: str | Path) -> "Facts":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FactsError(f"facts file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise FactsError(f"facts file {path} is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise FactsError(f"facts file {path} must hold a JSON object")
        return cls.from_dict(data)
