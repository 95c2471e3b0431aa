"""`invoke setup`: the whole deployment, planned first, then each step."""
import contextlib

from invoke import Exit, task

from dpdeploy.cli import common
from dpdeploy.cli.plan import PLAN_HELP
from dpdeploy.records.run import RunRecord
from dpdeploy.records.terminal import capture, command_line
from dpdeploy.steps import pipeline
from dpdeploy.ui import render


@task(help={
    **PLAN_HELP,
    "dry": "Print the plan and the steps, change nothing.",
    "only": "Run only these steps (comma-separated, e.g. env,build); `plan` records the facts and plan only.",
    "source": "detectron2 source for the build step: git URL, local repo/checkout, archive or directory.",
    "allow_unpinned": "Build a source whose commit is not the matrix's pin (recorded loudly).",
    "force_smoke": "Run the smoke tests even when they already passed on this env, build and weights.",
    "no_wait": common.NO_WAIT_HELP,
})
def setup(c, dry: bool = False, json: bool = False, facts: str = "", profile: str = "", arch_list: str = "",
          prefix: str = "", max_jobs: int = 0, only: str = "", source: str = "", allow_unpinned: bool = False,
          force_smoke: bool = False, no_wait: bool = False) -> None:
    """Deploy DensePose on this host: env, build, weights, smoke tests, report."""
    with common.user_errors(json):
        s = common.settings(c, facts=facts, profile=profile, arch_list=arch_list, prefix=prefix, max_jobs=max_jobs,
                            source=source, allow_unpinned=allow_unpinned or None, force_smoke=force_smoke or None)
        steps = common.step_names(only)
        found, resolved = common.plan(s)
        with common.state_lock(s, no_wait=no_wait, dry=dry, quiet=json):
            record = None if dry else RunRecord.create(resolved.home, "setup")
            tee = capture(record.folder, command_line()) if record else contextlib.nullcontext()
            with tee:
                if not json:
                    print(render.plan_text(resolved) + "\n")
                echo = (lambda line: None) if json else print
                result = pipeline.run(found, resolved, s, common.load_matrix(s), only=steps,
                                      dry=dry, echo=echo, record=record)
                if json:
                    print(render.to_json(result))
                elif result.record:
                    print(f"\nrun record: {result.record.folder}")
        if not result.ok:
            raise Exit(code=1)
