"""`invoke env`: the profile's locked environment at the plan's prefix."""
import time
from pathlib import Path

from invoke import Exit, task

from dpdeploy.cli import common
from dpdeploy.steps import pipeline
from dpdeploy.steps.env import drop_build_tools as drop, quick_check
from dpdeploy.ui import render


@task(help={
    "dry": "Say what would be created, change nothing.",
    "json": "Print the step result as JSON.",
    "profile": "Profile from env/matrix.yml (cu130, cu126, cpu, cpu-slim, cpu-ray, cu130-ray, host); default auto.",
    "prefix": "Where the env goes (default <state root>/envs/<profile>).",
    "python": "Interpreter for the env (default: the plan's).",
    "facts": "Plan for a recorded facts JSON file instead of probing this host.",
    "conda": "Install env/conda-lock-<profile>.yml with `conda-lock install` instead of the pip lock.",
    "force": "Remove and recreate the env (default: repair drifted pins in place, hash-checked from the lock).",
    "drop_build_tools": "Then uninstall the pins only compiling uses (env/matrix.yml build_only: ninja, "
                        "wheel, the CUDA compiler wheels) and note it in the env's stamp: for a runtime image.",
    "no_wait": common.NO_WAIT_HELP,
})
def env(c, dry: bool = False, json: bool = False, profile: str = "", prefix: str = "", python: str = "",
        facts: str = "", conda: bool = False, force: bool = False, drop_build_tools: bool = False,
        no_wait: bool = False) -> None:
    """Create the locked DensePose environment, or repair the pins that drifted from its lock
    (a no-op when it matches the lock)."""
    start = time.monotonic()
    with common.user_errors(json):
        s = common.settings(c, profile=profile, prefix=prefix, python=python, facts=facts, conda=conda,
                            force_env=force or None)
        result = None if facts else quick_check(s, s.home_path)
        if result is None:
            found, plan = common.plan(s)
            with common.state_lock(s, no_wait=no_wait, dry=dry, quiet=json):
                done = pipeline.run(found, plan, s, common.load_matrix(s), kind="env", only=("env",), dry=dry,
                                    echo=(lambda line: None) if json else print)
            [result] = done.steps
        if drop_build_tools and result.ok and not dry:
            with common.state_lock(s, no_wait=no_wait, quiet=json):
                result = drop(Path(result.detail["prefix"]), common.load_matrix(s).build_only,
                              echo=(lambda line: None) if json else print)
        result.duration_s = round(time.monotonic() - start, 3)
    if json:
        print(render.to_json(result))
    else:
        print(f"env: {result.status} ({result.duration_s:.1f}s): {result.output}")
    if not result.ok:
        raise Exit(code=2 if result.detail.get("refused") else 1)
