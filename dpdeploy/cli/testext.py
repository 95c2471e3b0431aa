"""`invoke testext`: build dpdeploy's own small extension into the env (toolchain proof)."""
import sys

from invoke import Exit, task

from dpdeploy.build.testext import ExtensionError, build_and_load
from dpdeploy.build.toolchain import ToolchainError
from dpdeploy.build.wheels import BuildError
from dpdeploy.cli import common
from dpdeploy.cli.plan import PLAN_HELP
from dpdeploy.envs.site import EnvError
from dpdeploy.records.run import RunRecord
from dpdeploy.ui import render


@task(help={"json": "Print the result as JSON.", "profile": PLAN_HELP["profile"], "arch_list": PLAN_HELP["arch_list"],
            "prefix": PLAN_HELP["prefix"], "max_jobs": PLAN_HELP["max_jobs"], "no_wait": common.NO_WAIT_HELP})
def testext(c, json: bool = False, profile: str = "", arch_list: str = "", prefix: str = "", max_jobs: int = 0,
            no_wait: bool = False) -> None:
    """Build, install and call dpdeploy's tiny torch extension (dpdeploy/build/testext_src) with the build step's code."""
    with common.user_errors(json):
        s = common.settings(c, profile=profile, arch_list=arch_list, prefix=prefix, max_jobs=max_jobs)
        found, plan = common.plan(s)
    # it builds in <home>/tmp and the wheel cache: under the lock, so no sweep takes its folders
    with common.user_errors(json), common.state_lock(s, no_wait=no_wait, quiet=json):
        record = RunRecord.create(plan.home, "testext")
        try:
            result = build_and_load(plan, found.machine, record.log_path("testext"),
                                    (lambda line: None) if json else print)
        except (EnvError, ToolchainError, ExtensionError, BuildError) as exc:
            print(render.error_text(exc), file=sys.stderr)
            raise Exit(code=1) from None
    print(render.to_json(result) if json else f"testext: ok: {result['key']}; add_one -> {result['out']}, "
          f"CUDA op {'built' if result['cuda_op'] else 'not built (CPU)'}")
