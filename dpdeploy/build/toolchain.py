"""The compiler toolchain for building torch extensions: CUDA_HOME and the compile environment.

``assemble_cuda_home`` makes a CUDA_HOME out of PyPI's CUDA 13 toolchain wheels in the env;
``compile_env`` is a pure function of the plan (what torch's cpp_extension reads).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping, Optional

from dpdeploy.envs.site import site_packages
from dpdeploy.plan.resolve import Plan


class ToolchainError(Exception):
    """The toolchain cannot be set up: what failed, why, and the next step."""


# The PyPI toolchain wheels (nvidia-cuda-nvcc, -crt, nvidia-nvvm, -cccl, -runtime ==13.0.x)
# install under site-packages/nvidia/cu13/{bin,include,lib,nvvm} (measured on a build host).
CU13 = ("nvidia", "cu13")
LINKED_DIRS = ("bin", "include", "nvvm", "lib")
# Only lib/libcudart.so.13 ships; torch links `-lcudart` from $CUDA_HOME/lib64 when that
# directory exists (torch.utils.cpp_extension.library_paths), so lib64 gets an unversioned link.
CUDART = "libcudart.so.13"


def _wanted_links(cu13: Path) -> dict[str, Path]:
    links = {name: cu13 / name for name in LINKED_DIRS}
    links["lib64/libcudart.so"] = cu13 / "lib" / CUDART
    links[f"lib64/{CUDART}"] = cu13 / "lib" / CUDART
    return links


def _is_assembled(cuda_home: Path, links: Mapping[str, Path]) -> bool:
    return all((cuda_home / rel).is_symlink() and Path(os.readlink(cuda_home / rel)) == target
               for rel, target in links.items())


def assemble_cuda_home(prefix: str | Path, cuda_home: str | Path) -> Path:
    """Make ``cuda_home`` from the env's nvidia/cu13 wheels (symlinks), atomically; idempotent."""
    cu13 = site_packages(prefix).joinpath(*CU13)
    missing = [p for p in ("bin/nvcc", "include/cuda_runtime.h", f"lib/{CUDART}") if not (cu13 / p).exists()]
    if missing:
        raise ToolchainError(f"the CUDA toolchain wheels are missing from the env: no {', '.join(missing)} under {cu13} "
                             "(next: run `invoke env` for a CUDA profile, which installs nvidia-cuda-nvcc & co)")
    home = Path(cuda_home)
    links = _wanted_links(cu13)
    if _is_assembled(home, links):
        return home
    home.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{home.name}.", dir=home.parent))
    for rel, target in links.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).symlink_to(target)
    if home.exists():
        shutil.rmtree(home)
    os.replace(tmp, home)
    return home


def ccache_wrappers(ccache: str, cc: str, cxx: str, folder: str | Path) -> tuple[str, str]:
    """Scripts that run cc/cxx through ccache; returned as (CC, CXX).

    A script and not ``CC="ccache gcc"``: torch passes $CC to nvcc as ``-ccbin``, which
    takes one executable.
    """
    out = []
    for name, real in (("cc", cc), ("cxx", cxx)):
        path = Path(folder) / f"{name}-{Path(real).name}"
        text = f'#!/bin/sh\nexec {ccache} {real} "$@"\n'
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.chmod(0o755)
            os.replace(tmp, path)
        out.append(str(path))
    return out[0], out[1]


def compile_env(plan: Plan, base: Mapping[str, str], cc: Optional[str] = None,
                cxx: Optional[str] = None) -> dict[str, str]:
    """The environment for ``pip wheel`` of a torch extension under ``plan``.

    CUDA profiles: FORCE_CUDA=1 (builds with no GPU visible), a non-empty TORCH_CUDA_ARCH_LIST
    (torch raises IndexError in _get_cuda_arch_flags when FORCE_CUDA is set, no GPU is visible
    and the list is empty), CUDA_HOME explicit (torch otherwise guesses it from the nvcc on
    PATH, here a wrapper script under /usr/local/bin) with its bin first on PATH.
    CPU profiles: no CUDA variables, and no GPU visible, so torch builds no CUDA code.
    """
    if not (cc or plan.toolchain.cc):
        raise ToolchainError("no C/C++ compiler found (detectron2 compiles C++ extensions); "
                             "next: apt install build-essential (or gcc g++), then run the build again")
    env = {k: v for k, v in base.items()
           if k not in ("FORCE_CUDA", "TORCH_CUDA_ARCH_LIST", "CUDA_HOME", "CUDA_PATH", "CUDA_VISIBLE_DEVICES")}
    path = [str(Path(plan.prefix) / "bin")]
    if plan.force_cuda:
        archs = plan.torch_cuda_arch_list
        if not archs.strip():
            raise ToolchainError("refusing to build CUDA kernels with an empty TORCH_CUDA_ARCH_LIST "
                                 "(torch fails with IndexError when FORCE_CUDA=1 and no GPU is visible); "
                                 "next: pass --arch-list, e.g. --arch-list '8.0;9.0+PTX'")
        if not plan.toolchain.cuda_home:
            raise ToolchainError(f"profile {plan.profile} builds CUDA kernels but the plan has no CUDA_HOME")
        env.update(FORCE_CUDA="1", TORCH_CUDA_ARCH_LIST=archs, CUDA_HOME=plan.toolchain.cuda_home)
        path.insert(0, str(Path(plan.toolchain.cuda_home) / "bin"))
    else:
        env.update(FORCE_CUDA="0", CUDA_VISIBLE_DEVICES="")
    env.update(MAX_JOBS=str(plan.max_jobs), CC=cc or plan.toolchain.cc, CXX=cxx or plan.toolchain.cxx,
               PATH=os.pathsep.join(path + [p for p in base.get("PATH", "").split(os.pathsep) if p]))
    return env
