"""The OS packages table (``env/os-packages.yml``): which apt packages each consumer installs,
and why. Ansible's per-distro vars are rendered from it; the Dockerfile and ``.ci/run`` are
checked against it (tests/test_os_packages.py)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dpdeploy import paths
from dpdeploy.plan.matrix import MatrixError, read_yaml

CONSUMERS = ("host", "image", "builder", "ci")
VARS_HEADER = ("---\n# Generated from env/os-packages.yml by `invoke docs` ({distro}); do not edit by hand.\n"
               "_base_packages:\n")


@dataclass(frozen=True)
class Package:
    name: str
    why: str
    consumers: tuple[str, ...]
    names: dict[str, str]          # distro -> the package's name there, where it differs

    def on(self, distro: str) -> str:
        return self.names.get(distro, self.name)


@dataclass(frozen=True)
class Table:
    distros: tuple[str, ...]
    packages: tuple[Package, ...]

    def names(self, consumer: str, distro: str = "Debian-12") -> list[str]:
        """The packages ``consumer`` installs on ``distro``, in table order."""
        return [p.on(distro) for p in self.packages if consumer in p.consumers]

    def ansible_vars(self, distro: str) -> str:
        """``ansible/roles/base/vars/<distro>.yml``: the host packages, each with why."""
        rows = [p for p in self.packages if "host" in p.consumers]
        width = max(len(p.on(distro)) for p in rows)
        return VARS_HEADER.format(distro=distro) + "".join(
            f"  - {p.on(distro):<{width}}  # {p.why}\n" for p in rows)


def load(path: str | Path = paths.OS_PACKAGES) -> Table:
    """The table, validated: every package says why and who installs it."""
    data = read_yaml(path, MatrixError, "OS packages table")
    if not isinstance(data, dict) or data.get("schema") != 1:
        raise MatrixError(f"{path}: expected `schema: 1` and a packages mapping")
    distros = tuple(data.get("distros") or ())
    packages = []
    for name, entry in (data.get("packages") or {}).items():
        consumers = tuple((entry or {}).get("for") or ())
        unknown = set(consumers) - set(CONSUMERS)
        if not entry or not entry.get("why") or not consumers or unknown:
            raise MatrixError(f"{path}: package {name} needs `why` and `for` (from {', '.join(CONSUMERS)})"
                              + (f"; unknown {', '.join(sorted(unknown))}" if unknown else ""))
        names = dict(entry.get("names") or {})
        if set(names) - set(distros):
            raise MatrixError(f"{path}: package {name} names distros not in `distros`: {sorted(set(names) - set(distros))}")
        packages.append(Package(str(name), str(entry["why"]), consumers, names))
    return Table(distros, tuple(packages))


def generated() -> dict[str, str]:
    """Path (relative to the repo) -> content of every file rendered from the table."""
    table = load()
    return {f"ansible/roles/base/vars/{d}.yml": table.ansible_vars(d) for d in table.distros}
