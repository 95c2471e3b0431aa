"""The `env` step: the profile's locked environment at ``plan.prefix``.

A venv cannot be built elsewhere and renamed (its scripts hold absolute paths), so completion
is marked last: the marker ``.dpdeploy-managed`` is written first (the prefix is ours), the
env stamp (``dpdeploy.records.env_stamp``) last (the env is done). A prefix with the marker but no matching
stamp is removed and made again; a non-empty prefix without either is never touched.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

from dpdeploy import paths
from dpdeploy.diagnose.drift import PackageDrift, installed, package_drift
from dpdeploy.envs import conda as condaenv
from dpdeploy.envs import hostenv
from dpdeploy.envs import lockfile as locks
from dpdeploy.envs.site import EnvError, torch_info, torchvision_version
from dpdeploy.fsutil import atomic_write_json, atomic_write_text
from dpdeploy.host.network import Reach, reachable
from dpdeploy.plan.matrix import load as load_matrix
from dpdeploy.plan.matrix import version_tuple
from dpdeploy.plan.resolve import disk_shortfall
from dpdeploy.records import env_stamp, smoke_pass
from dpdeploy.records.env_stamp import EnvStamp
from dpdeploy.records.run import StepResult
from dpdeploy.records.schema import RecordError
from dpdeploy.runner import stream
from dpdeploy.state import debris
from dpdeploy.steps.context import StepContext

MARKER = ".dpdeploy-managed"
LOG = ".dpdeploy-env.log"   # used when there is no run record


@dataclass(frozen=True)
class Wanted:
    """What a finished env must match: the lock it came from, the profile, the interpreter."""

    kind: str           # "pip" or "conda"
    lock: str           # lock path as committed
    lock_sha256: str
    profile: str
    python: str         # the interpreter version the plan chose (plan.python_version)
    host_python: str = ""   # --profile host: the interpreter whose torch the env overlays
    host_torch: str = ""    # and the torch it has (a changed host torch redoes the env)

    def matches(self, stamp: EnvStamp) -> bool:
        return (stamp.kind, stamp.lock_sha256, stamp.profile, stamp.python) == \
            (self.kind, self.lock_sha256, self.profile, self.python) and \
            (not self.host_python or (stamp.host_python, stamp.torch) == (self.host_python, self.host_torch))


def read_stamp(prefix: Path) -> EnvStamp | None:
    """The env's stamp; a damaged or outdated one counts as none (the env is redone)."""
    try:
        return env_stamp.read(prefix)
    except RecordError:
        return None


def _dropped(prefix: Path) -> tuple[str, ...]:
    stamp = read_stamp(prefix)
    return stamp.dropped if stamp else ()


def prefix_state(prefix: Path, wanted: Wanted) -> str:
    """"up-to-date", "absent" (missing or empty), "ours" (dpdeploy-made, to redo) or "foreign"."""
    if not prefix.exists() or (prefix.is_dir() and not any(prefix.iterdir())):
        return "absent"
    stamp = read_stamp(prefix)
    if stamp is not None and wanted.matches(stamp) and (prefix / "bin" / "python").exists():
        return "up-to-date"
    if prefix.is_dir() and ((prefix / MARKER).is_file() or env_stamp.path(prefix).is_file()):
        return "ours"
    return "foreign"


def _refused(what: str, why: str, nxt: str, command: str = "") -> StepResult:
    return StepResult("env", "failed", command, output=f"{what}\n  why: {why}\n  next: {nxt}",
                      detail={"refused": True, "error": what, "why": [why], "next": [nxt]})


def _from_error(err: locks.LockError, command: str = "") -> StepResult:
    return StepResult("env", "failed", command, output=str(err), detail={"refused": True, **err.to_dict()})


class _Progress:
    """Turns pip's output into short progress lines: [i/N] per requirement, then the install."""

    def __init__(self, total: int, echo: Callable[[str], None]):
        self.total, self.seen, self.echo = total, 0, echo

    def __call__(self, line: str) -> None:
        if not self.total:  # conda-lock: no count to show, pass its lines through
            self.echo("    " + line)
        elif line.startswith(("Collecting ", "Processing ")):
            self.seen += 1
            self.echo(f"    [{self.seen}/{self.total}] {line.split(' (from')[0]}")
        elif line.startswith(("Installing collected", "Successfully installed", "ERROR", "Building wheel for")):
            self.echo("    " + (line if len(line) < 160 else line[:157] + "..."))


def _tail(log: Path, lines: int = 25) -> str:
    try:
        return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _pip_install(prefix: Path, requirements: Path, *extra: str) -> list[str]:
    return [str(prefix / "bin" / "python"), "-m", "pip", "install", "--require-hashes", "--no-deps", *extra,
            "--progress-bar", "off", "--disable-pip-version-check", "-r", str(requirements)]


def _offline(wheels: Optional[Path]) -> list[str]:
    return ["--no-index", "--find-links", str(wheels)] if wheels else []


def _pip_commands(python: str, prefix: Path, lock_file: Path, wheels: Optional[Path] = None) -> list[list[str]]:
    """venv, then the hashed lock (``wheels``: offline, from that folder only, no index)."""
    return [[python, "-m", "venv", str(prefix)], _pip_install(prefix, lock_file, *_offline(wheels))]


def pip_env(offline: bool, home: str | Path) -> dict[str, str]:
    """pip's environment: its temp folders in the state root's tmp (an interrupted install's are
    swept by the next run); offline: no pip config, index or find-links but the bundle's."""
    tmp = debris.tmp_root(home)
    tmp.mkdir(parents=True, exist_ok=True)
    if not offline:
        return {**os.environ, "PIP_NO_INPUT": "1", "TMPDIR": str(tmp)}
    kept = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return {**kept, "PIP_NO_INPUT": "1", "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "TMPDIR": str(tmp)}


def run(ctx: StepContext, reach: Reach = reachable, which: Callable[[str], Optional[str]] = shutil.which) -> StepResult:
    """Create (or confirm) the env; never touches a prefix dpdeploy did not make."""
    plan, matrix = ctx.plan, ctx.matrix
    profile = matrix.profile(plan.profile)
    prefix = Path(plan.prefix)
    try:
        if ctx.settings.conda:
            lock_file = condaenv.require_lockfile(profile.name)
            lock_rel = str(condaenv.lockfile_path(profile.name))
            commands = [condaenv.install_argv(profile.name, str(prefix))]
            total = 0
        else:
            lock = locks.load(profile)
            lock_file, lock_rel = paths.ROOT / lock.path, lock.path
            py_mm = ".".join(plan.python_version.split(".")[:2])
            if lock.python and version_tuple(lock.python) != version_tuple(py_mm):
                raise locks.LockError(f"{lock.path} was resolved for Python {lock.python}, the plan uses {py_mm}",
                                      [f"interpreter {plan.python} ({plan.python_version})"],
                                      [f"pass --python with a Python {lock.python} interpreter, or run "
                                       f"`invoke lock --profile {profile.name} --python-version {py_mm}`"])
            bundle = ctx.bundle
            commands = _pip_commands(plan.python, prefix, bundle.requirements if bundle else lock_file,
                                     bundle.wheels if bundle else None)
            total = len(lock.pins)
    except locks.LockError as err:
        return _from_error(err)
    command = " && ".join(" ".join(c) for c in commands)
    host = ctx.facts.host_torch if profile.host else None
    wanted = Wanted("conda" if ctx.settings.conda else "pip", lock_rel,
                    hashlib.sha256(lock_file.read_bytes()).hexdigest(), profile.name, plan.python_version,
                    host.python if host else "", host.torch if host else "")
    state = prefix_state(prefix, wanted)
    drift = None
    if state == "up-to-date" and wanted.kind == "pip":
        drift = package_drift(str(prefix), lock_file.read_text(encoding="utf-8"), lock_rel, host=host is not None,
                              dropped=_dropped(prefix))
        state = "ours" if drift is None else state   # its interpreter cannot even list packages: redo
    if state == "up-to-date" and ctx.settings.force_env:
        state = "ours"
    if state == "up-to-date" and drift is not None and drift.diffs:
        if ctx.dry:
            return StepResult("env", "planned", command, output=f"would reinstall {len(drift.names)} drifted pin(s) "
                              f"from {lock_rel}: {'; '.join(drift.diffs)}")
        return _repair(ctx, prefix, lock_file, lock_rel, drift, host is not None)
    if state == "up-to-date":
        return StepResult("env", "up-to-date", command, output=f"{prefix} matches {lock_rel}",
                          detail={"prefix": str(prefix), "lock_sha256": wanted.lock_sha256})
    if state == "foreign":
        return _refused(f"{prefix} exists and was not made by dpdeploy",
                        f"it is not empty and has no {MARKER} or {env_stamp.FILE}; dpdeploy never deletes what it did not make",
                        "choose another --prefix, or move that directory away yourself", command)
    if ctx.dry:
        what = "remove the unfinished env and " if state == "ours" else ""
        over = f" over the torch of {host.python}" if host else ""
        return StepResult("env", "planned", command, output=f"would {what}create {prefix} from {lock_rel}{over}")
    if state == "absent":
        short = disk_shortfall(profile, ctx.facts)   # probed at the prefix (or the state root) for this run
        if short:
            return _refused(f"not enough disk to create {prefix}", short,
                            "free disk space, or choose another state root (DPDEPLOY_HOME) or --prefix", command)
    if wanted.kind == "conda":
        try:
            condaenv.preflight(matrix, which, reach)
        except locks.LockError as err:
            return _from_error(err, command)
    return _create(ctx, prefix, state, wanted, commands, command, total, host.site_packages if host else ())


def _create(ctx: StepContext, prefix: Path, state: str, wanted: Wanted, commands: list[list[str]],
            command: str, total: int, host_site: tuple[str, ...] = ()) -> StepResult:
    if state == "ours":
        ctx.echo(f"    removing the unfinished or outdated env at {prefix}")
        shutil.rmtree(prefix)
    conda = wanted.kind == "conda"
    if not conda:  # conda-lock creates the prefix itself; it is marked right after
        prefix.mkdir(parents=True, exist_ok=True)
        atomic_write_json(prefix / MARKER, {"made_by": "dpdeploy", "created": time.time()})
    log = ctx.record.log_path("env") if ctx.record else (prefix.parent / f"{prefix.name}{LOG}" if conda else prefix / LOG)
    log.parent.mkdir(parents=True, exist_ok=True)
    progress = _Progress(total, ctx.echo)
    for argv in commands:
        ctx.echo(f"    $ {' '.join(argv)}   (log: {log})")
        rc = stream(argv, log_path=str(log), echo=progress, env=pip_env(ctx.bundle is not None, ctx.plan.home))
        if rc != 0:
            return StepResult("env", "failed", command, output=f"`{argv[0]} {' '.join(argv[1:3])}` exited {rc}; "
                              f"the env is left unstamped and is redone next time.\n{_tail(log)}",
                              detail={"log": str(log), "returncode": rc})
        if wanted.host_python and "venv" in argv:
            ctx.echo(f"    host packages: {hostenv.write_pth(prefix, host_site)}")
    if conda:
        atomic_write_json(prefix / MARKER, {"made_by": "dpdeploy", "created": time.time()})
    try:
        torch = torch_info(prefix)
    except EnvError as err:
        return StepResult("env", "failed", command, output=f"the lock installed no usable torch: {err}",
                          detail={"log": str(log)})
    stamp = EnvStamp(kind=wanted.kind, lock=wanted.lock, lock_sha256=wanted.lock_sha256, profile=wanted.profile,
                     python=wanted.python, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), torch=torch.torch,
                     torchvision=torchvision_version(prefix), torch_cuda=torch.torch_cuda,
                     host_python=wanted.host_python, host_site_packages=host_site,
                     bundle=ctx.bundle.manifest_sha256 if ctx.bundle else "")
    env_stamp.write(prefix, stamp)  # last: only a finished env carries it
    return StepResult("env", "done", command, output=f"created {prefix} from {wanted.lock}",
                      detail={"prefix": str(prefix), "log": str(log), **stamp.__dict__})


def _repair(ctx: StepContext, prefix: Path, lock_file: Path, lock_rel: str, drift: PackageDrift,
            host: bool = False) -> StepResult:
    """Reinstall the drifted pins in place, hash-checked, from the lock's own entries (offline: from
    the bundle's wheels only)."""
    log = ctx.record.log_path("env") if ctx.record else prefix / LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    subset = prefix / ".dpdeploy-repair.txt"
    atomic_write_text(subset, locks.subset(lock_file.read_text(encoding="utf-8"), set(drift.names)))
    argv = _pip_install(prefix, subset, "--force-reinstall", *_offline(ctx.bundle.wheels if ctx.bundle else None))
    command = " ".join(argv)
    for line in drift.diffs:
        ctx.echo(f"    drift: {line}")
    ctx.echo(f"    $ {command}   (log: {log})")
    smoke_pass.forget(prefix)
    try:
        rc = stream(argv, log_path=str(log), echo=_Progress(len(drift.names), ctx.echo),
                    env=pip_env(ctx.bundle is not None, ctx.plan.home))
    finally:
        subset.unlink(missing_ok=True)
    after = package_drift(str(prefix), lock_file.read_text(encoding="utf-8"), lock_rel, host=host,
                          dropped=_dropped(prefix))
    if rc != 0 or after is None or after.diffs:
        left = "; ".join(after.diffs) if after else "the env cannot list its packages"
        return StepResult("env", "failed", command, output=f"repairing {len(drift.names)} drifted pin(s) failed "
                          f"(pip exit {rc}; still: {left or 'none'}).\n  next: `invoke env --force` recreates the env "
                          f"from {lock_rel}\n{_tail(log)}", detail={"log": str(log), "returncode": rc})
    return StepResult("env", "done", command, output=f"repaired {len(drift.names)} drifted pin(s) in {prefix} from "
                      f"{lock_rel}: {'; '.join(drift.diffs)}",
                      detail={"prefix": str(prefix), "log": str(log), "repaired": sorted(drift.names)})


def quick_check(settings, home: Path) -> Optional[StepResult]:
    """Up to date without probing the host? Only when the profile is chosen, the stamp matches
    and the installed packages match the lock (drift goes to the step, which repairs it).

    Probing can take seconds (pyenv shims); a finished env needs none of it to say so.
    """
    if settings.profile == "auto" or settings.python or settings.force_env:
        return None
    matrix = load_matrix(settings.matrix)
    profile = matrix.profile(settings.profile)
    prefix = Path(settings.prefix or home / "envs" / profile.name)
    stamp = read_stamp(prefix)
    if stamp is None:
        return None
    try:
        path = condaenv.require_lockfile(profile.name) if settings.conda else paths.ROOT / locks.load(profile).path
    except locks.LockError:
        return None
    wanted = Wanted("conda" if settings.conda else "pip", str(path.relative_to(paths.ROOT)),
                    hashlib.sha256(path.read_bytes()).hexdigest(), profile.name, stamp.python)
    if prefix_state(prefix, wanted) != "up-to-date":
        return None
    if not settings.conda:
        drift = package_drift(str(prefix), path.read_text(encoding="utf-8"), wanted.lock, host=profile.host,
                              dropped=stamp.dropped)
        if drift is None or drift.diffs:
            return None
    return StepResult("env", "up-to-date", output=f"{prefix} matches {wanted.lock}",
                      detail={"prefix": str(prefix), "lock_sha256": wanted.lock_sha256})


def drop_build_tools(prefix: Path, names: tuple[str, ...], echo: Callable[[str], None] = print) -> StepResult:
    """Uninstall the matrix's build-only pins from a finished env (the runtime image's) and list
    them in its stamp, so drift checks and `invoke env` take their absence as intended."""
    stamp = read_stamp(prefix)
    listing = installed(str(prefix))
    if stamp is None or listing is None:
        return _refused(f"{prefix} is not a finished env", "only an env `invoke env` made and stamped can drop "
                        "its build tools", "invoke env, then this again")
    present = {locks.normalize(n) for n, _ in listing.dists}
    gone = sorted(n for n in names if locks.normalize(n) in present)
    argv = [str(prefix / "bin" / "python"), "-m", "pip", "uninstall", "-y", "--disable-pip-version-check", *gone]
    log = prefix / LOG
    if gone:
        echo(f"    dropping {len(gone)} build-only package(s) from {prefix}: {', '.join(gone)}")
        rc = stream(argv, log_path=str(log), echo=lambda line: None)
        if rc != 0:
            return StepResult("env", "failed", " ".join(argv), output=f"pip uninstall failed (exit {rc})\n{_tail(log)}",
                              detail={"log": str(log), "returncode": rc})
    kept = sorted(set(stamp.dropped) | set(gone))
    env_stamp.write(prefix, replace(stamp, dropped=tuple(kept)))
    return StepResult("env", "done" if gone else "up-to-date", " ".join(argv) if gone else "",
                      output=f"build-only pins dropped from {prefix}: {', '.join(kept) or 'none installed'}",
                      detail={"prefix": str(prefix), "dropped": kept})
