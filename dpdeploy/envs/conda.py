"""The conda path: env/environment-<profile>.yml and env/virtual-packages.yml rendered from the
matrix, conda-lock to lock them, `conda-lock install` to create the env.

Nothing here fabricates a lock: env/conda-lock-<profile>.yml only ever comes from conda-lock.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import yaml

from dpdeploy import paths
from dpdeploy.envs.lockfile import LockError, pins
from dpdeploy.plan.matrix import Matrix, Profile, version_tuple
from dpdeploy.host.network import Reach

ENV_DIR = Path("env")
VIRTUAL_PACKAGES = ENV_DIR / "virtual-packages.yml"
HEADER = "# Rendered from env/matrix.yml by `invoke lock`; do not edit (tests/test_locks.py checks it).\n"
INSTALL_HINT = ("install conda-lock (e.g. `pipx install conda-lock`, or `.venv/bin/pip install conda-lock`) "
                "and a conda (miniforge) on PATH")


def environment_path(profile: str) -> Path:
    return ENV_DIR / f"environment-{profile}.yml"


def lockfile_path(profile: str) -> Path:
    return ENV_DIR / f"conda-lock-{profile}.yml"


def compiler_major(matrix: Matrix, profile: Profile) -> int:
    """The newest gcc nvcc accepts for the profile's CUDA (CPU profiles: the newest row)."""
    if profile.is_cuda:
        return matrix.max_gcc(profile.cuda)
    return max(matrix.nvcc_max_gcc.values())


def pip_pins(matrix: Matrix, profile: Profile) -> dict[str, str]:
    """The pip lock's pins minus the CUDA toolchain wheels (conda's cuda-nvcc replaces them)."""
    return pins(matrix, profile, toolchain=False)


def environment(matrix: Matrix, profile: Profile, python_version: str) -> dict:
    conda = matrix.conda
    deps: list = [f"python={python_version}", "pip"]
    if profile.is_cuda:
        deps += [f"{pkg}={profile.cuda}" for pkg in conda["cuda_packages"]]
    deps.append(f"{conda['compiler_package']}={compiler_major(matrix, profile)}")
    pip = [] if profile.on_pypi else [f"--extra-index-url {profile.index}"]
    pip += [f"{name}=={version}" for name, version in pip_pins(matrix, profile).items()]
    return {"name": f"densepose-{profile.name}", "channels": list(conda["channels"]) + ["nodefaults"],
            "platforms": [conda["platform"]], "dependencies": deps + [{"pip": pip}]}


def render_environment(matrix: Matrix, profile: Profile, python_version: str) -> str:
    return HEADER + yaml.safe_dump(environment(matrix, profile, python_version), sort_keys=False)


def render_virtual_packages(matrix: Matrix) -> str:
    """conda-lock's --virtual-package-spec: lets a GPU-less host lock CUDA packages."""
    cudas = [p.cuda for p in matrix.profiles.values() if p.is_cuda]
    newest = max(cudas, key=version_tuple)
    spec = {"subdirs": {matrix.conda["platform"]: {"packages": {
        "__glibc": matrix.conda["virtual_glibc"], "__cuda": newest, "__unix": "0", "__linux": "5.10"}}}}
    return HEADER + yaml.safe_dump(spec, sort_keys=False)


def lock_argv(matrix: Matrix, profile: str) -> list[str]:
    return ["conda-lock", "lock", "--file", str(environment_path(profile)),
            "--virtual-package-spec", str(VIRTUAL_PACKAGES), "--platform", matrix.conda["platform"],
            "--lockfile", str(lockfile_path(profile))]


def install_argv(profile: str, prefix: str) -> list[str]:
    return ["conda-lock", "install", "--prefix", prefix, str(lockfile_path(profile))]


def preflight(matrix: Matrix, which: Callable[[str], Optional[str]], reach: Reach) -> None:
    """Fail fast, before conda-lock runs: the tool must exist and the channel must answer."""
    if which("conda-lock") is None:
        raise LockError("conda-lock is not installed", ["`conda-lock` is not on PATH"], [INSTALL_HINT])
    url = matrix.conda["channel_url"]
    why = reach(url.rstrip("/") + "/noarch/repodata.json")
    if why:
        raise LockError(f"conda channel {', '.join(matrix.conda['channels'])} is unreachable", [why],
                        ["run this on a host that reaches conda.anaconda.org, or use the pip path "
                         "(`invoke env` without --conda)"])


def require_lockfile(profile: str, root: Path = paths.ROOT) -> Path:
    path = root / lockfile_path(profile)
    if not path.is_file():
        raise LockError(f"no conda lock for profile {profile}", [f"{lockfile_path(profile)} does not exist"],
                        [f"run `invoke lock --conda --profile {profile}` where the conda channels are "
                         f"reachable and commit {lockfile_path(profile)}"])
    return path
