"""`invoke lock`: regenerate the hash-pinned locks (uv) or the conda locks (conda-lock)."""
from invoke import task

from dpdeploy.ui import render
from dpdeploy.envs.locking import RUNTIME_TXT, lock_conda, lock_pip, lock_runtime
from dpdeploy.envs.lockfile import DEFAULT_PYTHON
from dpdeploy.plan.resolve import PlanError
from dpdeploy.cli import common


def _python_version(s, given: str) -> str:
    """--python-version, else the plan's Python major.minor, else DEFAULT_PYTHON."""
    if given:
        return given
    try:
        _, plan = common.plan(s)
    except PlanError:
        return DEFAULT_PYTHON
    return ".".join(plan.python_version.split(".")[:2])


@task(help={
    "profile": "Lock only this profile (default: every profile whose index is reachable).",
    "python_version": "Python major.minor to resolve for (default: the plan's Python, else 3.11).",
    "conda": "Run conda-lock on env/environment-<profile>.yml instead of uv.",
    "runtime": "Only write requirements/runtime.txt (the runtime image's venv): the entries of "
               "requirements/tools.txt named in requirements/runtime.in.",
    "dry": "Print the commands, write nothing.",
    "json": "Print the results as JSON.",
})
def lock(c, profile: str = "", python_version: str = "", conda: bool = False, runtime: bool = False,
         dry: bool = False, json: bool = False) -> None:
    """Regenerate env/locks/<profile>.txt with uv (or conda-lock files with --conda)."""
    if runtime:
        text = lock_runtime(dry=dry)
        count = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        print(f"{RUNTIME_TXT}: {'would write' if dry else 'written'}, {count} packages")
        return
    with common.user_errors(json):
        s = common.settings(c, profile=profile)
        matrix = common.load_matrix(s)
        py = _python_version(s, python_version)
        make = lock_conda if conda else lock_pip
        results = make(matrix, profile, py, dry=dry)
    if json:
        print(render.to_json([r.to_dict() for r in results]))
        return
    for r in results:
        size = f", {r.packages} packages, {r.size_bytes // 1024} KiB" if r.status == "locked" and r.packages else ""
        print(f"{r.profile}: {r.status}{size}  {r.path}" + (f"\n  {r.message}" if r.message else "")
              + (f"\n  $ {r.command}" if r.status == "planned" else ""))
