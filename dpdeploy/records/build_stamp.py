"""The build stamp ``<prefix>/.dpdeploy-build.json``: written last by the build step (detectron2
and DensePose installed and verified), read by the step itself (up to date?), ``invoke
doctor``'s arch check, ``invoke verify``, the versions table and the smoke suite."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpdeploy.records import schema

FILE = ".dpdeploy-build.json"
VERSION = 1
NEXT = "invoke build"
CPU_BUILD = "none (CPU build)"


@dataclass(frozen=True)
class BuildStamp:
    commit: str                    # the detectron2 commit built ("" when unknown: unpinned source)
    commit_how: str                # how the commit was established (git, archive header, ...)
    unpinned: bool
    source: str                    # the source spec as given (URL or path)
    key: str                       # the wheel-cache key
    force_cuda: bool               # FORCE_CUDA=1 build (CUDA kernels compiled)
    arch_list: str                 # TORCH_CUDA_ARCH_LIST compiled for ("" for a CPU build)
    compiled_archs: list[str]      # read from _C's fatbin (sm_90, compute_90, ...); [] for a CPU build
    c_path: str                    # the installed detectron2/_C*.so
    c_sha256: str
    wheels: list[str] = field(default_factory=list)
    key_fields: dict[str, Any] = field(default_factory=dict)
    gpu_check: str = ""             # what ran on the GPU during verification ("" when none visible)

    def archs_text(self) -> str:
        """What the report and the terminal show for the compiled archs."""
        if not self.force_cuda:
            return CPU_BUILD
        return ", ".join(self.compiled_archs) or "none found in _C"

    def arch_list_text(self) -> str:
        return self.arch_list if self.force_cuda else CPU_BUILD


def path(prefix: os.PathLike | str) -> Path:
    return Path(prefix) / FILE


def write(prefix: os.PathLike | str, stamp: BuildStamp) -> Path:
    return schema.write(path(prefix), stamp, VERSION)


def read(prefix: os.PathLike | str) -> BuildStamp | None:
    """The stamp, None before a finished build; RecordError when damaged or outdated."""
    return schema.load(BuildStamp, path(prefix), VERSION, "build stamp", NEXT)
