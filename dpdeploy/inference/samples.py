"""The sample photos (env/matrix.yml `samples`): real human photos shipped inside PyPI
packages installed in the DensePose env, found in its site-packages and checked by sha256."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Any

from dpdeploy.envs.site import site_packages_dirs
from dpdeploy.fsutil import sha256_file


class SampleError(Exception):
    """A sample photo that is missing or differs from the pinned file."""


@dataclass(frozen=True)
class Sample:
    name: str
    path: Path
    sha256: str


def resolve(samples: Mapping[str, Mapping[str, Any]], prefix: str | Path) -> list[Sample]:
    """Every sample photo, verified; SampleError names the one that is missing or different."""
    dirs = site_packages_dirs(prefix)
    found = []
    for name, entry in samples.items():
        module = entry.get("module", entry["package"])
        candidates = [d / module / entry["path"] for d in dirs]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise SampleError(f"sample {name}: {module}/{entry['path']} not found in {prefix} "
                              f"(is {entry['package']} installed in the env? run invoke setup)")
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise SampleError(f"sample {name}: {path} has sha256 {actual}, the matrix pins {entry['sha256']} "
                              f"(a different {entry['package']} release?)")
        found.append(Sample(name, path, actual))
    return found
