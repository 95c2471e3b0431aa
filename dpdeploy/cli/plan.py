"""`invoke plan`: the resolved plan and its reasons."""
from invoke import task

from dpdeploy.ui import render
from dpdeploy.cli import common

PLAN_HELP = {
    "json": "Print the plan as JSON.",
    "facts": "Plan for a recorded facts JSON file instead of this host.",
    "profile": "Force a profile from env/matrix.yml (cu130, cu126, cpu, cpu-slim, cpu-ray, cu130-ray, host); default auto.",
    "arch_list": "TORCH_CUDA_ARCH_LIST override, e.g. '8.0;9.0+PTX' (default: the GPUs present).",
    "prefix": "Where the environment goes (default <state root>/envs/<profile>).",
    "max_jobs": "Parallel compiler jobs (default: from RAM and cores).",
}
PYTHON_HELP = "Interpreter for the env; with --profile host, the one whose torch and torchvision are used."


@task(help={**PLAN_HELP, "python": PYTHON_HELP})
def plan(c, json: bool = False, facts: str = "", profile: str = "", arch_list: str = "",
         prefix: str = "", max_jobs: int = 0, python: str = "") -> None:
    """Resolve the plan: profile, arch list, toolchain, paths, steps, and why."""
    with common.user_errors(json):
        s = common.settings(c, facts=facts, profile=profile, arch_list=arch_list, prefix=prefix, max_jobs=max_jobs,
                            python=python)
        _, resolved = common.plan(s)
        print(render.to_json(resolved) if json else render.plan_text(resolved))
