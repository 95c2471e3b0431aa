"""What every task does first: resolve settings, get facts, make the plan; and how errors end."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from typing import Any, Iterator

from invoke import Collection, Exit, Task
from invoke.parser import Argument

from dpdeploy.plan import matrix as matrix_mod
from dpdeploy.ui import render
from dpdeploy.bundle.make import BundleError
from dpdeploy.host.facts import Facts, FactsError
from dpdeploy.envs.lockfile import LockError
from dpdeploy.plan.matrix import Matrix, MatrixError
from dpdeploy.plan.resolve import STEP_NAMES, Plan, PlanError, resolve
from dpdeploy.inference.predict import PredictError
from dpdeploy.host import pytorch
from dpdeploy.host.probe import load_nvml, probe, probe_gpus
from dpdeploy.runner import end_all, run as run_command
from dpdeploy.plan.settings import Settings, SettingsError, check_config_files, resolve as resolve_settings
from dpdeploy.records.terminal import command_line
from dpdeploy.state.lock import Busy, Interrupted, Unusable, hold, signals_raise

USER_ERRORS = (MatrixError, FactsError, SettingsError, PlanError, LockError, PredictError, BundleError, Busy, Unusable)
NO_WAIT_HELP = "When another command holds the state root, exit 2 at once (default: wait for it)."


def settings(c, **flags: Any) -> Settings:
    """Flags whose value is "" / 0 / None count as not given."""
    given = {k: v for k, v in flags.items() if v not in ("", 0, None)}
    raw = c.config.get("dpdeploy")
    return resolve_settings(given, config=dict(raw) if hasattr(raw, "keys") else raw)


class _IntArgument(Argument):
    """An int flag whose value is not a whole number ends with one line and exit 2 (invoke's own
    parser would raise a ValueError traceback)."""

    def set_value(self, value: Any, cast: bool = True) -> None:
        try:
            super().set_value(value, cast)
        except ValueError:
            raise Exit(render.error_text(SettingsError(
                f"--{self.name.replace('_', '-')} {value}: not a whole number; "
                f"next: give an integer, e.g. --{self.name.replace('_', '-')} {self.default or 1}")), code=2) from None


class _StrictTask(Task):
    def get_arguments(self, *args: Any, **kwargs: Any) -> list:
        found = super().get_arguments(*args, **kwargs)
        for arg in found:
            if arg.kind is int:
                arg.__class__ = _IntArgument
        return found


def strict_int_flags(ns: Collection) -> Collection:
    """Make every int flag of every task in ``ns`` (and its sub-collections) refuse a non-number
    with one line and exit 2."""
    for task in ns.tasks.values():
        if type(task) is Task:
            task.__class__ = _StrictTask
    for sub in ns.collections.values():
        strict_int_flags(sub)
    return ns


def runtime_config_path() -> str | None:
    """The runtime config file of this invoke run: ``invoke -f FILE`` (as parsed by the running
    program) or INVOKE_RUNTIME_CONFIG."""
    import invoke.main

    args = getattr(invoke.main.program, "args", None)
    given = args.config.value if args is not None and "config" in args else None
    return given or os.environ.get("INVOKE_RUNTIME_CONFIG") or None


def check_project_config(folder: str) -> None:
    """Exit 2 with one line when a config file invoke will read for this run (system, user, the
    project's invoke.yaml in ``folder``, the runtime file) is broken, before invoke merges it."""
    try:
        check_config_files(folder, runtime_config_path())
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


def predict_target(s: Settings, prefix: str, device: str) -> tuple[str, str, tuple]:
    """(env prefix, default device, the host's GPUs) for `invoke predict`. With --prefix and
    --device given, the plan is not needed: only the GPUs are looked up (NVML, milliseconds)
    instead of the full host probe (every python and compiler on PATH, about a second)."""
    if not (prefix and device):
        host, planned = plan(s)
        return planned.prefix, planned.device, host.gpus
    if s.facts:
        return prefix, device, Facts.load(s.facts).gpus
    return prefix, device, probe_gpus(run_command, load_nvml())[1] if device.startswith("cuda") else ()


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


@contextlib.contextmanager
def interruptible(what: str) -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP end ``what`` (its children are ended by the runner) with one line
    and exit 130 / 128+N, never a traceback."""
    try:
        with signals_raise():
            yield
    except (KeyboardInterrupt, Interrupted) as exc:
        end_all()
        why = str(exc) if isinstance(exc, Interrupted) else "interrupted by SIGINT (Ctrl-C)"
        print(f"{command_line()}: {why}; {what}", file=sys.stderr)
        raise Exit(code=exc.code if isinstance(exc, Interrupted) else 130) from None


@contextlib.contextmanager
def state_lock(s: Settings, *, no_wait: bool = False, dry: bool = False, quiet: bool = False) -> Iterator[None]:
    """Hold the state root for a command that changes it (a dry run changes nothing: no lock);
    Ctrl-C, SIGTERM and SIGHUP end it with one line and exit 130 / 128+N, never a traceback."""
    if dry:
        yield
        return
    echo = (lambda line: print(line, file=sys.stderr)) if quiet else print
    with interruptible("its children were ended and its temp folders removed; the run record says interrupted; "
                       "next: run it again (finished steps are not redone)"):
        with hold(s.home_path, command_line(), wait=not no_wait, echo=echo):
            yield
