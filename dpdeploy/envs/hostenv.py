"""A host-torch env: a plain venv of the host's interpreter whose ``_dpdeploy_host.pth`` appends
the host's package folders to its import path, after its own site-packages. The host's torch is
imported from there and nothing of the host is changed; what pip installs lands in the venv and
shadows the host's copy."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from dpdeploy.envs.site import HOST_PTH, site_packages
from dpdeploy.fsutil import atomic_write_text


def pth_text(host_site_packages: Sequence[str]) -> str:
    lines = ["# written by dpdeploy (--profile host): the host's package folders, imported after this env's own"]
    return "\n".join(lines + list(host_site_packages)) + "\n"


def write_pth(prefix: str | Path, host_site_packages: Sequence[str]) -> Path:
    """Point the venv at the host's packages (called between `python -m venv` and pip)."""
    path = site_packages(prefix) / HOST_PTH
    atomic_write_text(path, pth_text(host_site_packages))
    return path
