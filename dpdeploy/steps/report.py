"""Setup step `report`: write the deployment document for this setup run and the latest predict run."""
from __future__ import annotations

from dpdeploy.report import ReportError, write
from dpdeploy.report.runs import latest
from dpdeploy.records.run import StepResult
from dpdeploy.steps.context import StepContext


def run(ctx: StepContext) -> StepResult:
    if ctx.dry or ctx.record is None:
        return StepResult("report", "planned", "invoke report")
    out = ctx.record.folder / "report"
    try:
        result = write(ctx.record.folder, latest(ctx.plan.home, "predict"), out, command="invoke report")
    except (ReportError, OSError) as err:
        return StepResult("report", "failed", "invoke report", output=f"the report could not be written: {err}")
    note = f"{result.headline}; wrote {out}" + ("".join(f"; {p.splitlines()[0]}" for p in result.problems))
    return StepResult("report", "done", f"invoke report --run {ctx.record.id}", output=note,
                      detail={"files": [str(f) for f in result.files], "status": result.status})
