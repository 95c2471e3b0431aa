"""`invoke smoke`: the smoke tests (smoke_tests/, pytest) inside the deployed env."""
import sys

from invoke import Exit, task

from dpdeploy.ui import render
from dpdeploy.inference.smoke import SmokeError, run_smoke
from dpdeploy.cli import common
from dpdeploy.cli.plan import PLAN_HELP


@task(help={
    "junit": "Also write the JUnit XML here (default: <run record>/junit.xml).",
    "model": "The model whose cached weights to use (default: models.default in env/matrix.yml).",
    "pytest_args": "Extra pytest arguments, e.g. '-k versions -x'.",
    "json": "Print the result as JSON (the suite's output goes to the run record's log only).",
    "facts": PLAN_HELP["facts"],
    "profile": PLAN_HELP["profile"],
    "prefix": PLAN_HELP["prefix"],
    "no_wait": common.NO_WAIT_HELP,
})
def smoke(c, junit: str = "", model: str = "", pytest_args: str = "", json: bool = False, facts: str = "",
          profile: str = "", prefix: str = "", no_wait: bool = False) -> None:
    """Run the smoke tests in the deployed env: versions, GPU, _C archs, DensePose on sample photos."""
    with common.user_errors(json):
        s = common.settings(c, facts=facts, profile=profile, prefix=prefix)
        _, plan = common.plan(s)
        matrix = common.load_matrix(s)
    try:
        with common.user_errors(json), common.state_lock(s, no_wait=no_wait, quiet=json):
            result = run_smoke(plan, matrix, model, junit or None, tuple(pytest_args.split()),
                               echo=(lambda line: None) if json else print)
    except SmokeError as err:
        print(render.to_json({"error": str(err)}) if json else render.error_text(err),
              file=sys.stdout if json else sys.stderr)
        raise Exit(code=2) from None
    if json:
        print(render.to_json(result))
    else:
        print(f"\nsmoke: {'passed' if result.ok else 'FAILED'}: {result.summary()}")
        print(f"  junit {result.junit}\n  log   {result.log}")
    if not result.ok:
        raise Exit(code=1)
