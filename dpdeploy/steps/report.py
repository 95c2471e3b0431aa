"""Setup step `report`: write the deployment document for this setup run and the latest predict run.

When every other step of this run only confirmed what an earlier run did, the earlier run's
report still documents the deployment: the step says where it is instead of writing a copy
(`invoke report` writes a new one whenever asked).
"""
from __future__ import annotations

from pathlib import Path

from dpdeploy.records.run import StepResult, read_steps
from dpdeploy.records.schema import RecordError
from dpdeploy.report import ReportError, write
from dpdeploy.report.runs import latest
from dpdeploy.steps.context import StepContext

CHANGED = ("done", "failed")


def _unchanged_since(folder: Path) -> Path | None:
    """The newest earlier setup run's report folder, when this run changed nothing."""
    try:
        if any(s.status in CHANGED for s in read_steps(folder)):
            return None
    except RecordError:
        return None
    earlier = sorted(p for p in folder.parent.glob("*-setup*") if p.name < folder.name and (p / "report").is_dir())
    return earlier[-1] / "report" if earlier else None


def run(ctx: StepContext) -> StepResult:
    if ctx.dry or ctx.record is None:
        return StepResult("report", "planned", "invoke report")
    previous = _unchanged_since(ctx.record.folder)
    predict = latest(ctx.plan.home, "predict")
    if previous is not None and (predict is None or predict.name < previous.parent.name):
        return StepResult("report", "up-to-date", "invoke report",
                          output=f"nothing changed since {previous.parent.name}: its report {previous} documents this "
                                 "deployment; `invoke report` writes a new one")
    out = ctx.record.folder / "report"
    try:
        result = write(ctx.record.folder, predict, out, command="invoke report")
    except (ReportError, OSError) as err:
        return StepResult("report", "failed", "invoke report", output=f"the report could not be written: {err}")
    note = f"{result.headline}; wrote {out}" + ("".join(f"; {p.splitlines()[0]}" for p in result.problems))
    return StepResult("report", "done", f"invoke report --run {ctx.record.id}", output=note,
                      detail={"files": [str(f) for f in result.files], "status": result.status})
