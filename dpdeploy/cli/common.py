"""What every task does first: resolve settings, get facts, make the plan; and how errors end."""
from __future__ import annotations

import contextlib
import dataclasses
import sys
from typing import Any, Iterator

from invoke import Exit

from dpdeploy.plan import matrix as matrix_mod
from dpdeploy.ui import render
from dpdeploy.bundle.make import BundleError
from dpdeploy.host.facts import Facts, FactsError
from dpdeploy.envs.lockfile import LockError
from dpdeploy.plan.matrix import Matrix, MatrixError
from dpdeploy.plan.resolve import STEP_NAMES, Plan, PlanError, resolve
from dpdeploy.inference.predict import PredictError
from dpdeploy.host import pytorch
from dpdeploy.host.probe import load_nvml, probe
from dpdeploy.plan.settings import Settings, SettingsError, check_project_file, resolve as resolve_settings

USER_ERRORS = (MatrixError, FactsError, SettingsError, PlanError, LockError, PredictError, BundleError)


def settings(c, **flags: Any) -> Settings:
    """Flags whose value is "" / 0 / None count as not given."""
    given = {k: v for k, v in flags.items() if v not in ("", 0, None)}
    raw = c.config.get("dpdeploy")
    return resolve_settings(given, config=dict(raw) if hasattr(raw, "keys") else raw)


def check_project_config(folder: str) -> None:
    """Exit 2 with one line when invoke.yaml in ``folder`` is broken (before invoke reads it)."""
    try:
        check_project_file(folder)
    except SettingsError as err:
        print(render.error_text(err), file=sys.stderr)
        sys.exit(2)


def facts(s: Settings) -> Facts:
    """Recorded or probed; for a host profile with the torch of --python asked from it."""
    found = Facts.load(s.facts) if s.facts else probe(disk_path=s.prefix or str(s.home_path), nvml=load_nvml())
    chosen = load_matrix(s).profiles.get(s.profile)
    if chosen is not None and chosen.host and s.python and found.host_torch is None:
        found = dataclasses.replace(found, host_torch=pytorch.probe(s.python))
    return found


def load_matrix(s: Settings) -> Matrix:
    return matrix_mod.load(s.matrix)


PLAN_ONLY = "plan"   # `--only plan`: a run that records facts and plan and runs no step (the Ansible role's first look)


def step_names(only: str) -> tuple[str, ...]:
    """`--only env,build` as step names (`plan` alone: record the facts and plan, run no step); an
    unknown name is refused before anything runs."""
    names = tuple(n.strip() for n in only.split(",") if n.strip())
    unknown = sorted(set(names) - {*STEP_NAMES, PLAN_ONLY})
    if unknown:
        raise SettingsError(f"--only {only}: unknown step {', '.join(unknown)}; the steps are {', '.join(STEP_NAMES)} "
                            f"(or {PLAN_ONLY}: the plan only)")
    return names


def plan(s: Settings) -> tuple[Facts, Plan]:
    f = facts(s)
    return f, resolve(f, load_matrix(s), s)


@contextlib.contextmanager
def user_errors(as_json: bool = False) -> Iterator[None]:
    """Turn known errors into a clear message (or JSON) and exit status 2."""
    try:
        yield
    except USER_ERRORS as err:
        if as_json:
            payload = err.to_dict() if isinstance(err, (PlanError, LockError)) else {"error": str(err)}
            print(render.to_json(payload))
        else:
            print(render.error_text(err), file=sys.stderr)
        raise Exit(code=2) from None
