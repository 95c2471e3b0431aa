"""Which GPUs a set of compiled CUDA archs covers: the one home of that rule.

A GPU of compute capability M.m runs a cubin (``sm_XY``) of its own major X == M with a minor
Y <= m, or PTX (``compute_XY``) of any version <= M.m, which the driver JIT-compiles (CUDA C
Programming Guide, "Binary Compatibility"). The build's verification (build/verification.py,
from the ``_C`` fatbin) and ``invoke doctor``/``verify`` (diagnose/checks.py, from the build
stamp) both ask here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from dpdeploy.plan.matrix import parse_arch_list

# "sm_90", "sm_100a", "compute_120" (fatbin names) or "9.0", "9.0+PTX" (TORCH_CUDA_ARCH_LIST).
_TOKEN = re.compile(r"^(?:(sm|compute)_(\d{2,})[a-z]?|(\d+)\.(\d)(\+PTX)?)$")
_CC = re.compile(r"^(\d+)\.(\d)$")


@dataclass(frozen=True, order=True)
class Arch:
    """One compiled target: ``kind`` "sm" (cubin, machine code) or "ptx"; ``sm`` 90 for sm_90."""

    kind: str
    sm: int

    def __str__(self) -> str:
        return f"sm_{self.sm}" if self.kind == "sm" else f"compute_{self.sm}"

    def runs_on(self, major: int, minor: int) -> bool:
        """Whether a GPU of compute capability major.minor can run this target."""
        if self.kind == "sm":
            return self.sm // 10 == major and self.sm % 10 <= minor
        return self.sm <= major * 10 + minor


def parse_archs(items: str | Iterable[str]) -> set[Arch]:
    """Archs from names ("sm_90", "compute_90") or arch lists ("8.0;9.0+PTX"); others are skipped."""
    found = set()
    for item in [items] if isinstance(items, str) else items:
        for token in re.split(r"[;\s,]+", str(item).strip()):
            match = _TOKEN.match(token)
            if not match:
                continue
            if match.group(1):
                found.add(Arch("sm" if match.group(1) == "sm" else "ptx", int(match.group(2))))
            else:
                sm = int(match.group(3)) * 10 + int(match.group(4))
                found.add(Arch("sm", sm))
                if match.group(5):
                    found.add(Arch("ptx", sm))
    return found


def covers(archs: Iterable[Arch], cc: str) -> bool:
    """Whether a GPU of compute capability ``cc`` ("8.6") runs one of ``archs`` (False for "unknown")."""
    match = _CC.match(cc)
    return bool(match) and any(a.runs_on(int(match.group(1)), int(match.group(2))) for a in archs)


def coverage_gaps(archs: set[Arch], arch_list: str, gpu_ccs: list[str]) -> list[str]:
    """What ``archs`` lack for a TORCH_CUDA_ARCH_LIST and for GPUs (empty = covered).

    Each ``arch_list`` entry needs its cubin (and its PTX when marked +PTX); each GPU needs
    one target it ``covers``.
    """
    gaps = []
    for arch, ptx in (parse_arch_list(arch_list) if arch_list else []):
        sm = int(arch.replace(".", ""))
        if Arch("sm", sm) not in archs:
            gaps.append(f"sm_{sm} (from TORCH_CUDA_ARCH_LIST {arch})")
        if ptx and Arch("ptx", sm) not in archs:
            gaps.append(f"compute_{sm} PTX (from {arch}+PTX)")
    for cc in gpu_ccs:
        if not covers(archs, cc):
            major, sm = cc.split(".")[0], cc.replace(".", "")
            gaps.append(f"a GPU with compute capability {cc} (no sm_{major}x cubin <= sm_{sm}, no PTX <= compute_{sm})")
    return gaps
