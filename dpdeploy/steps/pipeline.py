"""`setup`: facts -> plan -> steps, each recorded; stops at the first failed step."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from dpdeploy.host.facts import Facts
from dpdeploy.plan.resolve import Plan
from dpdeploy.records.run import RunRecord
from dpdeploy.plan.settings import Settings
from dpdeploy.steps import StepContext, StepResult, run_step
from dpdeploy.records.versions import collect as collect_versions, to_dicts


@dataclass
class SetupResult:
    plan: Plan
    record: Optional[RunRecord]
    steps: list[StepResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "run": str(self.record.folder) if self.record else None,
            "profile": self.plan.profile,
            "steps": [s.to_dict() for s in self.steps],
        }


def setup(facts: Facts, plan: Plan, settings: Settings, dry: bool = False,
          only: tuple[str, ...] = (), echo: Callable[[str], None] = print,
          record: Optional[RunRecord] = None) -> SetupResult:
    """Run the plan's steps; ``record`` is created here unless the caller made it (to tee into it)."""
    if record is None and not dry:
        record = RunRecord.create(plan.home, "setup")
    if record:
        record.write("facts", facts)
        record.write("plan", plan)
        record.write("settings", dict(settings.values))
    result = SetupResult(plan, record)
    ctx = StepContext(plan, facts, settings, record, dry, echo)
    for step in plan.steps:
        if only and step.name not in only:
            continue
        echo(f"==> {step.name}: {step.summary}")
        outcome = run_step(step.name, ctx)
        echo(f"    {outcome.status} ({outcome.duration_s:.1f}s){': ' + outcome.output if outcome.output and outcome.status != 'done' else ''}")
        result.steps.append(outcome)
        if record:
            record.add_step(outcome)
            # what is installed now (stamps written by env/build), read by the report step
            record.write("versions", to_dicts(collect_versions(plan.prefix, facts.to_dict())))
        if not outcome.ok:
            break
    if record:
        record.write("result", result)
    return result
