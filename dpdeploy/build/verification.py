"""After the build: detectron2's ops run in the env, and ``_C`` holds code for every planned GPU."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from dpdeploy import paths
from dpdeploy import runner as runner_mod
from dpdeploy.build.fatbin import compiled_archs
from dpdeploy.plan.archs import coverage_gaps
from dpdeploy.plan.resolve import Plan

CHECK_SCRIPT = paths.INENV / "check_detectron2.py"


@dataclass
class Verification:
    c_path: str = ""
    archs: list[str] = field(default_factory=list)   # e.g. ["sm_90", "compute_90"]
    gpu: str = ""                                     # what ran on the GPU, "" when none visible
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def arch_problems(so_path: str, plan: Plan) -> tuple[list[str], list[str]]:
    """(compiled archs, what is missing for the plan's arch list and GPUs)."""
    archs = compiled_archs(so_path)
    names = [str(a) for a in sorted(archs)]
    if not plan.force_cuda:
        return names, []
    gaps = coverage_gaps(archs, plan.torch_cuda_arch_list, [g["compute_capability"] for g in plan.gpus])
    if gaps:
        return names, [f"{Path(so_path).name} lacks code for {gap}; it has {', '.join(names) or 'no GPU code'}. "
                       "next: rebuild with --arch-list covering these GPUs" for gap in gaps]
    return names, []


def verify(plan: Plan, python: str, run=runner_mod.run) -> Verification:
    """Run the in-env checks, then read the archs from the ``_C`` the env imported."""
    done = run([python, str(CHECK_SCRIPT)], timeout=300)
    if done is None or not done.ok:
        tail = "" if done is None else (done.stderr or done.stdout).strip()[-1500:]
        return Verification(problems=[f"importing detectron2._C / running its ops in {python} failed:\n{tail}"])
    try:
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Verification(problems=[f"the check script printed no result: {done.stdout[-500:]!r}"])
    archs, gaps = arch_problems(found["c_path"], plan)
    return Verification(found["c_path"], archs, found.get("gpu", ""), found["problems"] + gaps)
