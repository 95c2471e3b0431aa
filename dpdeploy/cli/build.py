"""`invoke build`: detectron2 + DensePose at the pinned commit, into the plan's env."""
from invoke import Exit, task

from dpdeploy.cli import common
from dpdeploy.cli.plan import PLAN_HELP
from dpdeploy.steps import pipeline
from dpdeploy.ui import render


@task(help={
    **PLAN_HELP,
    "source": "detectron2 source: a git URL, a local clone/checkout, a .tar.gz/.tgz/.tar/.zip, or a directory "
              "(default: the matrix's GitHub repo).",
    "allow_unpinned": "Build a source whose commit is not the matrix's pin (recorded as unpinned).",
    "dry": "Print what would be built, change nothing.",
    "json": "Print the step result as JSON.",
    "no_wait": common.NO_WAIT_HELP,
})
def build(c, source: str = "", allow_unpinned: bool = False, dry: bool = False, json: bool = False,
          facts: str = "", profile: str = "", arch_list: str = "", prefix: str = "", max_jobs: int = 0,
          no_wait: bool = False) -> None:
    """Build and verify detectron2 + DensePose wheels for the planned GPUs (cached)."""
    with common.user_errors(json):
        s = common.settings(c, source=source, allow_unpinned=allow_unpinned or None, facts=facts, profile=profile,
                            arch_list=arch_list, prefix=prefix, max_jobs=max_jobs)
        found, resolved = common.plan(s)
        with common.state_lock(s, no_wait=no_wait, dry=dry, quiet=json):
            done = pipeline.run(found, resolved, s, common.load_matrix(s), kind="build", only=("build",), dry=dry,
                                echo=(lambda line: None) if json else print)
    [result] = done.steps
    if json:
        print(render.to_json(result))
    else:
        print(f"build: {result.status} ({result.duration_s:.1f}s): {result.output}")
    if not result.ok:
        raise Exit(code=1)
