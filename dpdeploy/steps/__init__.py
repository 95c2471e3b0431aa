"""The steps ``invoke setup`` runs, in plan order. Each is idempotent and reports a StepResult."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

from dpdeploy.host.facts import Facts
from dpdeploy.plan.resolve import Plan
from dpdeploy.records.run import RunRecord
from dpdeploy.plan.settings import Settings


@dataclass
class StepResult:
    name: str
    status: str            # "done", "up-to-date", "skipped", "failed", "planned" (dry run)
    command: str = ""      # what ran, as a user could type it
    duration_s: float = 0.0
    output: str = ""       # the tail of the output, or a one-line summary
    detail: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StepContext:
    plan: Plan
    facts: Facts
    settings: Settings
    record: Optional[RunRecord]
    dry: bool = False
    echo: Callable[[str], None] = print


StepFn = Callable[[StepContext], StepResult]

# name -> implementation; filled as each step lands. Plan order comes from plan.steps.
REGISTRY: dict[str, StepFn] = {}


def run_step(name: str, ctx: StepContext) -> StepResult:
    """Run one step (timed); a step without an implementation is reported as skipped."""
    fn = REGISTRY.get(name)
    if fn is None:
        return StepResult(name, "skipped", output="not implemented in this version of dpdeploy")
    start = time.monotonic()
    result = fn(ctx)
    result.duration_s = round(result.duration_s or time.monotonic() - start, 3)
    return result


# Each step module imports StepContext/StepResult from here, so they register at the end.
from dpdeploy.steps import (build as _build, env as _env, report as _report, smoke as _smoke, weights as _weights)  # noqa: E402

REGISTRY.update({"env": _env.run, "build": _build.run, "weights": _weights.run, "smoke": _smoke.run,
                 "report": _report.run})
