"""Facts: what a host is, as a frozen dataclass with a JSON round trip.

Only ``dpdeploy.host.probe`` fills these from a live machine; ``--facts FILE`` loads them
from JSON so any host can be planned from anywhere.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from dpdeploy.fsutil import read_user_text

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
class HostTorch:
    """The torch an existing interpreter has (``--profile host``), as that interpreter reports it."""

    python: str                 # the interpreter asked (--python)
    python_version: str         # "" when it did not run
    torch: str = ""             # torch.__version__; "" when torch cannot be imported
    torchvision: str = ""
    cuda: str = ""              # torch.version.cuda; "" for a CPU-only build
    arch_list: tuple[str, ...] = ()       # the archs torch was compiled for: sm_80 ... compute_90
    site_packages: tuple[str, ...] = ()   # where its packages are (the host env overlays them)
    error: str = ""             # why torch or torchvision could not be imported


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
    host_torch: Optional[HostTorch] = None  # only for a host-profile plan
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
        """Facts from their JSON form, every field type-checked (FactsError names the key)."""
        return _build(cls, data, "")

    @classmethod
    def load(cls, path: str | Path) -> "Facts":
        try:
            data = json.loads(read_user_text(path, FactsError, "facts"))
        except json.JSONDecodeError as exc:
            raise FactsError(f"facts file {path} is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise FactsError(f"facts file {path} must hold a JSON object")
        try:
            return cls.from_dict(data)
        except FactsError as exc:
            raise FactsError(f"facts file {path}: {exc}; next: fix it, or record it again with "
                             "`invoke facts --json > FILE`") from None


_NAMES = {str: "a string", int: "an integer", bool: "true or false"}


def _build(cls: type, data: Any, where: str) -> Any:
    """``cls(**data)`` for a facts dataclass, converting and checking each field by its type."""
    if not isinstance(data, dict):
        raise FactsError(f"{where.rstrip('.') or 'facts'} must be an object, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise FactsError(f"unknown facts keys: {', '.join(where + k for k in unknown)}")
    missing = [k for k, f in known.items() if k not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise FactsError(f"missing facts keys: {', '.join(where + k for k in missing)}")
    return cls(**{k: _value(v, hints[k], f"{where}{k}") for k, v in data.items()})


def _value(value: Any, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        return None if value is None else _value(value, args[0], where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise FactsError(f"{where} must be a list, got {type(value).__name__} {value!r}")
        return tuple(_value(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{where}.")
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise FactsError(f"{where} must be {_NAMES.get(hint, hint.__name__)}, got {type(value).__name__} {value!r}")
    return value
