"""The NVIDIA driver a profile needs, and whether a driver is new enough: the one home of that rule.

The plan (``Plan.min_driver``) can only be made where the GPUs are visible, i.e. once a driver
works; Ansible's nvidia_driver role must know the floor before that, so it asks here (on the
controller, from the same matrix) and acts on the answer:

    python3 -m dpdeploy.plan.driver cu130     # or "auto": the first GPU profile the plan tries
    python3 -m dpdeploy.plan.driver cu130 --installed 535.104.05 --branch 580

The plan (resolve.py) and ``invoke doctor`` (diagnose/checks.py) ask ``new_enough`` too.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional

from dpdeploy.plan import matrix as matrix_mod
from dpdeploy.plan.matrix import Matrix, MatrixError, version_tuple


def new_enough(driver: str, min_driver: str) -> bool:
    """Whether ``driver`` (535.104.05) meets ``min_driver``; a bare series (580) stands for its newest release."""
    have, need = version_tuple(driver), version_tuple(min_driver)
    if not have:
        return False
    return have[0] >= need[0] if len(have) == 1 else have >= need


def requirement(matrix: Matrix, profile: str = "auto", installed: Optional[str] = None,
                branch: Optional[str] = None) -> dict[str, Any]:
    """{profile, cuda, min_driver, branch, branch_ok[, installed, ok, reason]}.

    ``branch`` is the driver series to install: the one asked for, else the floor's (580 for
    580.65.06); ``branch_ok`` says whether it meets the floor. With ``installed`` ("" = no
    driver), ``ok`` says whether that driver meets the floor, and ``reason`` says why.
    """
    chosen = matrix.profile(matrix.auto_gpu[0] if profile == "auto" else profile)
    if not chosen.is_cuda:
        raise MatrixError(f"profile {chosen.name} runs on the CPU and needs no NVIDIA driver; "
                          f"choose a CUDA profile ({', '.join(matrix.auto_gpu)})")
    need = f"{chosen.name} (CUDA {chosen.cuda}) needs driver >= {chosen.min_driver}"
    if branch and not branch.isdigit():
        raise ValueError(f"driver series {branch!r} is not a number like 580")
    series = branch or str(version_tuple(chosen.min_driver)[0])
    out: dict[str, Any] = {"profile": chosen.name, "cuda": chosen.cuda, "min_driver": chosen.min_driver,
                           "branch": int(series), "branch_ok": new_enough(series, chosen.min_driver)}
    if installed is not None:
        ok = bool(installed) and new_enough(installed, chosen.min_driver)
        found = f"driver {installed}" if installed else "no NVIDIA driver installed"
        out.update(installed=installed, ok=ok, reason=f"{found}; {need}")
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m dpdeploy.plan.driver", description=__doc__.splitlines()[0])
    parser.add_argument("profile", nargs="?", default="auto", help="a CUDA profile of env/matrix.yml, or auto")
    parser.add_argument("--installed", help="the installed driver version (\"\" = none): answer ok and reason")
    parser.add_argument("--branch", help="the driver series to install instead of the floor's: answer branch_ok")
    args = parser.parse_args(argv)
    try:
        print(json.dumps(requirement(matrix_mod.load(), args.profile, args.installed, args.branch), sort_keys=True))
    except ValueError as err:   # MatrixError included
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
