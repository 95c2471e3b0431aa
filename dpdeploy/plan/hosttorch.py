"""The host profile's rules (pure): can the torch of ``--python`` serve DensePose on this host?"""
from __future__ import annotations

import re
from typing import Optional

from dpdeploy.host.facts import Facts, HostTorch
from dpdeploy.plan.matrix import Profile, version_tuple

_ARCH = re.compile(r"^(sm|compute)_(\d+)(\d)([a-z]?)$")


def covers(arch_list: tuple[str, ...], cc: str) -> bool:
    """Whether torch's compiled archs run on compute capability ``cc``: an sm_XY cubin runs on X.Z
    for Z >= Y (sm_XYa only on X.Y), a compute_XY PTX is JIT-compiled for anything >= X.Y."""
    want = version_tuple(cc)[:2]
    for item in arch_list:
        match = _ARCH.match(item)
        if not match:
            continue
        kind, arch, suffix = match.group(1), (int(match.group(2)), int(match.group(3))), match.group(4)
        if kind == "compute" and arch <= want:
            return True
        if kind == "sm" and arch[0] == want[0] and (arch[1] == want[1] or (not suffix and arch[1] < want[1])):
            return True
    return False


def arch_list_of(torch_archs: tuple[str, ...]) -> str:
    """torch's ``sm_80 sm_90 compute_90`` as a TORCH_CUDA_ARCH_LIST ("8.0;9.0+PTX")."""
    found = sorted({(int(m.group(2)), int(m.group(3))) for m in map(_ARCH.match, torch_archs)
                    if m and m.group(1) == "sm" and not m.group(4)})
    ptx = {(int(m.group(2)), int(m.group(3))) for m in map(_ARCH.match, torch_archs) if m and m.group(1) == "compute"}
    return ";".join(f"{a}.{b}" + ("+PTX" if (a, b) in ptx else "") for a, b in found)


def system_nvcc_for(facts: Facts, cuda: str) -> Optional[str]:
    """The system CUDA toolkit's root when its nvcc matches torch's CUDA and has the library headers."""
    tk = facts.cuda
    if tk and cuda and version_tuple(tk.nvcc.version)[:2] == version_tuple(cuda)[:2] and tk.has_library_headers:
        return tk.home
    return None


def _older(found: str, floor: str) -> bool:
    return version_tuple(found.split("+")[0])[:len(version_tuple(floor))] < version_tuple(floor)


def rejection(profile: Profile, facts: Facts, python: str) -> Optional[tuple[str, str]]:
    """(reason, hint) when the host's torch cannot serve this deployment; None when it can."""
    if not python:
        return ("the host profile needs --python: the interpreter whose torch and torchvision to use",
                "pass --python /path/to/python (e.g. the image's /usr/bin/python3)")
    ht: Optional[HostTorch] = facts.host_torch
    if ht is None or ht.python != python:
        return (f"no torch facts for {python}", f"run without --facts, or record them with --profile host --python {python}")
    if not ht.python_version:
        return (ht.error or f"{python} did not run", "pass --python with a working interpreter")
    if not profile.python_ok(ht.python_version):
        return (f"{python} is Python {ht.python_version}; needs {profile.python_min}-{profile.python_max}",
                f"pass --python with a Python {profile.python_min}-{profile.python_max} that has torch")
    if not ht.torch:
        return (f"no torch in {python} ({ht.error or 'import torch failed'})",
                "install torch there, or use a profile that brings its own (--profile cpu or cu130)")
    if _older(ht.torch, profile.torch):
        return (f"torch {ht.torch} in {python} is older than {profile.torch}, the oldest DensePose runs on here",
                "use an image with a newer torch, or --profile cu130 / cpu")
    if not ht.torchvision or _older(ht.torchvision, profile.torchvision):
        what = f"torchvision {ht.torchvision} is older than {profile.torchvision}" if ht.torchvision else \
            f"no torchvision in {python} ({ht.error or 'import torchvision failed'})"
        return (what, "install the torchvision paired with that torch there")
    if not facts.gpus:
        return None
    gpus = ", ".join(f"GPU {g.index} {g.name} (sm_{g.compute_capability.replace('.', '')})" for g in facts.gpus)
    if not ht.cuda:
        return (f"torch {ht.torch} in {python} is a CPU-only build (no CUDA) and this host has {gpus}",
                "use the image's CUDA build of torch, or hide the GPUs (CUDA_VISIBLE_DEVICES=) for a CPU deployment")
    missed = [g for g in facts.gpus if not covers(ht.arch_list, g.compute_capability)]
    if missed:
        names = ", ".join(f"GPU {g.index} {g.name} (sm_{g.compute_capability.replace('.', '')})" for g in missed)
        return (f"torch {ht.torch}'s arch list ({' '.join(ht.arch_list) or 'empty'}) misses {names}",
                "use a torch built for these GPUs (a newer image), or hide them with CUDA_VISIBLE_DEVICES")
    if system_nvcc_for(facts, ht.cuda) is None:
        return (f"no CUDA {ht.cuda} nvcc with library headers on this host to build detectron2 for torch {ht.torch}",
                f"use the image's -devel variant (it has nvcc {ht.cuda}), or install CUDA toolkit {ht.cuda}")
    return None
