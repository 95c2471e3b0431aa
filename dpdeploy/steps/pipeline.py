"""The one way through the steps: ``invoke setup`` and the single-step tasks (``invoke env``,
``invoke build``, ...) all run here, so every run record has the same shape: facts, plan,
settings, steps.json, versions.json, result.json. Stops at the first failed step."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

from dpdeploy.bundle.unpack import Unpacked
from dpdeploy.host.facts import Facts
from dpdeploy.plan.matrix import Matrix
from dpdeploy.plan.resolve import Plan
from dpdeploy.plan.settings import Settings
from dpdeploy.records import versions
from dpdeploy.records.run import RunRecord, RunResult, StepResult
from dpdeploy.steps import build, env, report, smoke, weights
from dpdeploy.steps.context import StepContext, StepFn

STEPS: dict[str, StepFn] = {"env": env.run, "build": build.run, "weights": weights.run, "smoke": smoke.run,
                            "report": report.run}


@dataclass
class PipelineResult:
    plan: Plan
    record: RunRecord | None
    steps: list[StepResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "run": str(self.record.folder) if self.record else None, "profile": self.plan.profile,
                "steps": [s.to_dict() for s in self.steps]}


def run_step(name: str, ctx: StepContext) -> StepResult:
    """Run one step, timed."""
    start = time.monotonic()
    result = STEPS[name](ctx)
    result.duration_s = round(result.duration_s or time.monotonic() - start, 3)
    return result


def run(facts: Facts, plan: Plan, settings: Settings, matrix: Matrix, *, kind: str = "setup",
        only: tuple[str, ...] = (), dry: bool = False, echo: Callable[[str], None] = print,
        record: RunRecord | None = None, bundle: Unpacked | None = None) -> PipelineResult:
    """Run the plan's steps (``only``: a subset, in plan order); ``record`` is created here unless
    the caller made it (to tee the terminal into it). A dry run writes nothing."""
    if record is None and not dry:
        record = RunRecord.create(plan.home, kind)
    result = PipelineResult(plan, record)
    chosen = [s for s in plan.steps if not only or s.name in only]
    outcome = RunResult(kind, "running", plan.profile, time.time(), steps=[s.name for s in chosen], pid=os.getpid())
    if record:
        record.write("facts", facts)
        record.write("plan", plan)
        record.write("settings", dict(settings.values))
        record.write_result(outcome)
    ctx = StepContext(plan, facts, settings, matrix, record, dry, echo, bundle)
    try:
        for step in chosen:
            echo(f"==> {step.name}: {step.summary}")
            done = run_step(step.name, ctx)
            note = f": {done.output}" if done.output and done.status != "done" else ""
            echo(f"    {done.status} ({done.duration_s:.1f}s){note}")
            result.steps.append(done)
            if record:
                record.add_step(done)
                # what is installed now (the stamps env/build wrote), read by the report step
                record.write("versions", versions.to_dicts(versions.collect(plan.prefix, facts.to_dict())))
            if not done.ok:
                break
        outcome.status = "done" if result.ok else "failed"
    except BaseException as exc:   # Ctrl-C, SIGTERM as SystemExit, a crash: the record says so
        outcome.status, outcome.error = "interrupted", str(exc) if str(exc) else f"interrupted ({type(exc).__name__})"
        raise
    finally:
        outcome.ended = time.time()
        if record:
            record.write_result(outcome)
    return result
