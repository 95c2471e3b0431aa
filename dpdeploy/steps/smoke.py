"""The `smoke` step: the smoke tests in the deployed env (see dpdeploy/inference/smoke.py)."""
from __future__ import annotations

from dpdeploy.inference.smoke import SmokeError, command, run_smoke
from dpdeploy.records.run import StepResult
from dpdeploy.steps.context import StepContext


def run(ctx: StepContext) -> StepResult:
    if ctx.dry:
        return StepResult("smoke", "planned", " ".join(command(ctx.plan, "<run>/junit.xml")))
    try:
        result = run_smoke(ctx.plan, ctx.matrix, record=ctx.record,
                           echo=lambda line: ctx.echo(f"    {line}"))
    except SmokeError as err:
        return StepResult("smoke", "failed", "invoke smoke", output=str(err))
    return StepResult("smoke", "done" if result.ok else "failed", " ".join(result.command),
                      output=result.summary(), detail=result.to_dict())
