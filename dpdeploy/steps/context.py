"""What every step receives: the plan, the facts, the settings, the matrix, the run record."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from dpdeploy.bundle.unpack import Unpacked
from dpdeploy.host.facts import Facts
from dpdeploy.plan.matrix import Matrix
from dpdeploy.plan.resolve import Plan
from dpdeploy.plan.settings import Settings
from dpdeploy.records.run import RunRecord, StepResult


@dataclass
class StepContext:
    plan: Plan
    facts: Facts
    settings: Settings
    matrix: Matrix
    record: RunRecord | None
    dry: bool = False
    echo: Callable[[str], None] = print
    bundle: Optional[Unpacked] = None   # setup --offline: what the bundle holds, unpacked and checked


StepFn = Callable[[StepContext], StepResult]
