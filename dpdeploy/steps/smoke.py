"""The `smoke` step: the smoke tests in the deployed env (see dpdeploy/inference/smoke.py).

Skipped, and said so, when the last passing suite ran on exactly this env, build and weights
(``dpdeploy.records.smoke_pass``); `invoke smoke` and `invoke setup --force-smoke` always run it.
"""
from __future__ import annotations

from dpdeploy.inference.smoke import SmokeError, command, fingerprint, run_smoke
from dpdeploy.records import smoke_pass
from dpdeploy.records.run import StepResult
from dpdeploy.records.schema import RecordError
from dpdeploy.steps.context import StepContext


def _confirmed(ctx: StepContext) -> smoke_pass.SmokePass | None:
    """The last pass, when nothing it checked has changed since."""
    try:
        last = smoke_pass.read(ctx.plan.prefix)
    except RecordError:
        return None
    return last if last and last.fingerprint == fingerprint(ctx.plan, ctx.matrix) else None


def run(ctx: StepContext) -> StepResult:
    if ctx.dry:
        return StepResult("smoke", "planned", " ".join(command(ctx.plan, "<run>/junit.xml")))
    last = None if ctx.settings.force_smoke else _confirmed(ctx)
    if last:
        return StepResult("smoke", "up-to-date", "invoke smoke",
                          output=f"passed in run {last.run} ({last.summary}) on this env, build and weights; "
                                 "`invoke smoke` or `invoke setup --force-smoke` runs it again",
                          detail={"confirmed_by": last.run, "junit": last.junit})
    try:
        result = run_smoke(ctx.plan, ctx.matrix, record=ctx.record, echo=lambda line: ctx.echo(f"    {line}"))
    except SmokeError as err:
        return StepResult("smoke", "failed", "invoke smoke", output=str(err))
    return StepResult("smoke", "done" if result.ok else "failed", " ".join(result.command),
                      output=result.summary(), detail=result.to_dict())
