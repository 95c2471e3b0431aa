"""``invoke verify``: is the deployed env still what the lock and the matrix say?

Compares the distributions installed in ``<prefix>`` with ``env/locks/<profile>.txt``, the
build stamp's detectron2 commit with the matrix, the compiled archs with this host's GPUs, and
the weights' checksums. Every comparison is a ``Check``; any ``fail`` is drift.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from packaging.markers import Marker

from dpdeploy import paths
from dpdeploy.diagnose.checks import Check, arch_check, env_missing, env_python, read_build_stamp
from dpdeploy.envs.lockfile import LockError, Pin, normalize, parse_lock
from dpdeploy.envs.site import HOST_PTH, EnvError, host_dirs, torch_info
from dpdeploy.host.facts import Facts
from dpdeploy.plan.matrix import Matrix
from dpdeploy.plan.resolve import Plan
from dpdeploy.records import build_stamp, env_stamp
from dpdeploy.records.schema import RecordError
from dpdeploy.records.build_stamp import BuildStamp
from dpdeploy.runner import Runner, run

LOCKS_DIR = paths.LOCKS
# Installed into every env without being locked: the venv's own installer, and what the build
# step compiles from source (checked through the build stamp instead).
UNLOCKED = frozenset({"pip", "setuptools", "wheel", "detectron2", "detectron2-densepose"})
# Run by the env's own interpreter: its marker environment (PEP 508 names) and its distributions.
LIST_SCRIPT = """
import importlib.metadata as m, json, os, platform, sys
env = {"python_version": ".".join(platform.python_version_tuple()[:2]),
       "python_full_version": platform.python_version(), "sys_platform": sys.platform,
       "platform_machine": platform.machine(), "platform_system": platform.system(),
       "platform_release": platform.release(), "os_name": os.name,
       "implementation_name": sys.implementation.name,
       "platform_python_implementation": platform.python_implementation()}
dists = [[d.metadata["Name"], d.version] for d in m.distributions() if d.metadata["Name"]]
print(json.dumps({"env": env, "dists": dists}))
"""


@dataclass(frozen=True)
class EnvListing:
    marker_env: dict
    dists: list[tuple[str, str]]


def applicable(locked: dict[str, tuple[Pin, ...]], marker_env: dict) -> dict[str, frozenset[str]]:
    """The pins whose markers hold in the env -> {name: accepted versions} (empty: any version)."""
    out = {}
    for name, pins in locked.items():
        live = [p for p in pins if p.marker is None or Marker(p.marker).evaluate(dict(marker_env))]
        if live:
            out[name] = frozenset(p.version for p in live if p.version)
    return out


def installed(prefix: str, runner: Runner = run) -> Optional[EnvListing]:
    """The env's marker environment and (name, version) of every distribution, read in the env."""
    result = runner([str(env_python(prefix)), "-c", LIST_SCRIPT], timeout=120)
    if result is None or not result.ok:
        return None
    try:
        data = json.loads(result.stdout)
        return EnvListing(dict(data["env"]), [(str(n), str(v)) for n, v in data["dists"]])
    except (ValueError, TypeError, KeyError):
        return None


def compare(locked: dict[str, frozenset[str]], present: list[tuple[str, str]],
            host: bool = False) -> tuple[list[str], list[str]]:
    """(differences, extras): lock entries missing or at another version; unlocked extras. In a
    host-torch env the first copy along the import path counts (the env's own shadows the host's)."""
    found: dict[str, set[str]] = {}
    for name, version in present:
        if not (host and normalize(name) in found):
            found.setdefault(normalize(name), set()).add(version)
    diffs = []
    for name in sorted(locked):
        want = locked[name]
        have = found.get(name)
        shown = " or ".join(sorted(want)) or "any version"
        if not have:
            diffs.append(f"{name}: locked {shown}, not installed")
        elif len(have) > 1:
            diffs.append(f"{name}: installed twice ({', '.join(sorted(have))}), locked {shown}")
        elif want and not have & want:
            diffs.append(f"{name}: installed {next(iter(have))}, locked {shown}")
    extras = [f"{n} {', '.join(sorted(v))}" for n, v in sorted(found.items()) if n not in locked and n not in UNLOCKED]
    return diffs, extras


@dataclass(frozen=True)
class PackageDrift:
    """The env against its lock: what ``invoke verify`` reports and ``invoke env`` repairs."""

    locked: int                  # pins that apply in this env
    diffs: list[str]             # one line per pin missing or at another version
    names: frozenset[str]        # those pins' names: what a repair reinstalls
    extras: list[str]            # installed, not locked (reported, never removed)


def package_drift(prefix: str, lock_text: str, lock_name: str, runner: Runner = run,
                  host: bool = False, dropped: Iterable[str] = ()) -> Optional[PackageDrift]:
    """Compare the env's distributions with the lock, less the pins ``dropped`` on purpose (the
    stamp's); None when the env cannot list them. LockError when the lock cannot be parsed."""
    listing = installed(prefix, runner)
    if listing is None:
        return None
    gone = {normalize(n) for n in dropped}
    locked = {name: pins for name, pins in applicable(parse_lock(lock_text, lock_name), listing.marker_env).items()
              if name not in gone}
    diffs, extras = compare(locked, listing.dists, host)
    return PackageDrift(len(locked), diffs, frozenset(d.split(":", 1)[0] for d in diffs), extras)


def packages_checks(prefix: str, lock_path: Path, runner: Runner = run, host: bool = False,
                    dropped: tuple[str, ...] = ()) -> list[Check]:
    if not lock_path.is_file():
        return [Check("packages", "fail", f"no lock file at {lock_path}",
                      "verify compares the env with its lock", "invoke lock")]
    try:
        drift = package_drift(prefix, lock_path.read_text(encoding="utf-8"), str(lock_path), runner, host, dropped)
    except LockError as exc:
        return [Check("packages", "fail", exc.what, exc.why[0], exc.next_steps[0])]
    if drift is None:
        return [Check("packages", "fail", f"could not list the distributions in {prefix}",
                      f"{env_python(prefix)} failed to run importlib.metadata", "invoke env")]
    locked, diffs, extras = drift.locked, drift.diffs, drift.extras
    checks = [
        Check("packages", "fail", f"{len(diffs)} of {locked} locked packages differ from {lock_path.name}",
              "the env drifted from its lock (a package was upgraded, downgraded or removed)",
              "invoke env (it reinstalls the differing pins from the lock)", tuple(diffs))
        if diffs else
        Check("packages", "ok", f"all {locked} locked packages installed at their locked versions")
    ]
    if dropped:
        checks.append(Check("build-tools", "ok", f"{len(dropped)} build-only pins dropped on purpose (a runtime "
                            "env): they are not drift", details=tuple(dropped)))
    if host:   # the host's own packages (torch and the rest of the image) are beyond the lock by design
        checks.append(Check("extra-packages", "ok", f"{len(extras)} packages beyond the lock, the host's own",
                            details=tuple(extras)))
        return checks
    checks.append(
        Check("extra-packages", "warn", f"{len(extras)} installed packages are not in the lock",
              "someone installed them by hand; they may shadow or upgrade locked ones",
              "invoke env", tuple(extras))
        if extras else Check("extra-packages", "ok", "no packages beyond the lock"))
    return checks


def host_torch_check(prefix: str, made: env_stamp.EnvStamp) -> Check:
    """A host-torch env: the host's folders are still there and its torch is the one the env was made over."""
    gone = [str(d) for d in host_dirs(prefix) if not d.is_dir()]
    try:
        now = torch_info(prefix).torch
    except EnvError as err:
        now = f"none ({err})"
    redo = f"invoke setup --profile host --python {made.host_python}"
    if gone or now != made.torch:
        what = f"host folders gone: {', '.join(gone)}" if gone else \
            f"the host torch is now {now}, the env was made over {made.torch}"
        return Check("host-torch", "fail", what, f"{made.host_python}'s packages changed under the env", redo)
    return Check("host-torch", "ok", f"torch {now} of {made.host_python} (through {HOST_PTH})")


def commit_check(stamp: Optional[BuildStamp], matrix: Matrix, prefix: str) -> Check:
    if stamp is None:
        return Check("detectron2-commit", "fail", f"no build stamp at {build_stamp.path(prefix)}",
                     "detectron2 was not built by dpdeploy in this env", "invoke build")
    commit = stamp.commit
    if commit != matrix.d2_commit:
        return Check("detectron2-commit", "fail",
                     f"detectron2 {str(commit)[:12]} built, matrix pins {matrix.d2_commit[:12]}",
                     "the env was built from another detectron2 commit than env/matrix.yml pins", "invoke build")
    return Check("detectron2-commit", "ok", f"detectron2 {commit[:12]} as pinned")



@dataclass
class VerifyResult:
    profile: str
    prefix: str
    lock: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    @property
    def differences(self) -> list[str]:
        return [f"{c.name}: {d}" for c in self.checks if c.status == "fail" for d in (c.details or (c.what,))]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "profile": self.profile, "prefix": self.prefix, "lock": self.lock,
                "differences": self.differences, "checks": [c.to_dict() for c in self.checks]}


def verify(facts: Facts, plan: Plan, matrix: Matrix, lock_path: Optional[Path] = None,
           runner: Runner = run) -> VerifyResult:
    """Compare the deployed env with its lock, the matrix and this host's GPUs."""
    lock = Path(lock_path) if lock_path else LOCKS_DIR / f"{plan.profile}.txt"
    result = VerifyResult(plan.profile, plan.prefix, str(lock))
    if not env_python(plan.prefix).exists():
        result.checks.append(env_missing("env", plan.prefix, status="fail"))
        return result
    result.checks.append(Check("env", "ok", f"env at {plan.prefix}"))
    try:
        made = env_stamp.read(plan.prefix)
    except RecordError:
        made = None
    host = made is not None and bool(made.host_python)
    result.checks += packages_checks(plan.prefix, lock, runner, host, made.dropped if made else ())
    if host:
        result.checks.append(host_torch_check(plan.prefix, made))
    stamp, problems = read_build_stamp(plan.prefix)
    result.checks += problems
    result.checks.append(commit_check(stamp, matrix, plan.prefix))
    result.checks.append(arch_check(stamp, facts.gpus, plan.cuda is not None))
    return result


def junit_xml(result: VerifyResult) -> str:
    """One testcase per check: fail -> <failure>, skip -> <skipped>, warn -> passes with system-out."""
    suite = ET.Element("testsuite", name="dpdeploy.diagnose.drift", tests=str(len(result.checks)),
                       failures=str(sum(c.status == "fail" for c in result.checks)),
                       skipped=str(sum(c.status == "skip" for c in result.checks)), errors="0")
    for check in result.checks:
        case = ET.SubElement(suite, "testcase", classname=f"dpdeploy.diagnose.drift.{result.profile}", name=check.name)
        body = "\n".join(filter(None, [check.why, *check.details, f"next: {check.next}" if check.next else ""]))
        if check.status == "fail":
            ET.SubElement(case, "failure", message=check.what).text = body
        elif check.status == "skip":
            ET.SubElement(case, "skipped", message=check.what)
        else:
            ET.SubElement(case, "system-out").text = "\n".join(filter(None, [f"{check.status}: {check.what}", body]))
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
