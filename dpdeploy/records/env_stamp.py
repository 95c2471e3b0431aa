"""The env stamp ``<prefix>/.dpdeploy-env.json``: written last by the env step (the env is
finished), read by the build step, ``invoke doctor``/``verify``, the versions table and the smoke
suite. This module alone knows its fields."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dpdeploy.records import schema

FILE = ".dpdeploy-env.json"
VERSION = 2   # 2: host_python, host_site_packages, bundle (a host-torch env; one made offline from a bundle)
NEXT = "invoke env"


@dataclass(frozen=True)
class EnvStamp:
    kind: str              # "pip" (venv + hashed lock) or "conda"
    lock: str              # the lock, relative to the checkout (env/locks/cpu.txt)
    lock_sha256: str
    profile: str
    python: str            # the env interpreter's version (plan.python_version)
    created: str           # ISO 8601, local time
    torch: str             # torch/torchvision as installed (read from the env's files)
    torchvision: str
    torch_cuda: str        # the CUDA torch was built with ("" for a CPU-only torch)
    host_python: str = ""  # --profile host: the interpreter whose torch the env uses ("" = torch is in the env)
    host_site_packages: tuple[str, ...] = ()  # the host folders the env sees (its _dpdeploy_host.pth)
    bundle: str = ""       # sha256 of the `invoke bundle` manifest the env was installed from ("" = online)
    dropped: tuple[str, ...] = ()  # locked pins removed on purpose (`invoke env --drop-build-tools`)


def path(prefix: os.PathLike | str) -> Path:
    return Path(prefix) / FILE


def write(prefix: os.PathLike | str, stamp: EnvStamp) -> Path:
    return schema.write(path(prefix), stamp, VERSION)


def read(prefix: os.PathLike | str) -> EnvStamp | None:
    """The stamp, None when the env is not finished; RecordError when damaged or outdated."""
    return schema.load(EnvStamp, path(prefix), VERSION, "env stamp", NEXT)
