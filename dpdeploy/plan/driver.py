"""The NVIDIA driver a profile needs, asked before any driver is on the host.

The plan (``Plan.min_driver``) can only be made where the GPUs are visible, i.e. once a driver
works; Ansible's nvidia_driver role must know the floor before that, so it asks here (on the
controller, from the same matrix):

    python3 -m dpdeploy.plan.driver cu130     # or "auto": the first GPU profile the plan tries
"""
from __future__ import annotations

import json
import sys
from typing import Any

from dpdeploy.plan import matrix as matrix_mod
from dpdeploy.plan.matrix import Matrix, MatrixError, version_tuple


def requirement(matrix: Matrix, profile: str = "auto") -> dict[str, Any]:
    """{profile, cuda, min_driver, branch}: branch is the driver series to install (580 for 580.65.06)."""
    chosen = matrix.profile(matrix.auto_gpu[0] if profile == "auto" else profile)
    if not chosen.is_cuda:
        raise MatrixError(f"profile {chosen.name} runs on the CPU and needs no NVIDIA driver; "
                          f"choose a CUDA profile ({', '.join(matrix.auto_gpu)})")
    return {"profile": chosen.name, "cuda": chosen.cuda, "min_driver": chosen.min_driver,
            "branch": version_tuple(chosen.min_driver)[0]}


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print("usage: python3 -m dpdeploy.plan.driver [PROFILE|auto]", file=sys.stderr)
        return 2
    try:
        print(json.dumps(requirement(matrix_mod.load(), argv[0] if argv else "auto"), sort_keys=True))
    except MatrixError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
