"""`smoke`: run ``smoke_tests/`` (pytest) with the deployed env's own interpreter.

The suite reads what it checks through environment variables (documented in
``smoke_tests/conftest.py``), so it runs the same from ``invoke smoke``, the setup step,
Docker, or by hand. Its JUnit XML is parsed back for the summary.
"""
from __future__ import annotations

import hashlib
import os
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional

from dpdeploy import paths
from dpdeploy import runner as runner_mod
from dpdeploy.inference import weights as w
from dpdeploy.plan.matrix import Matrix
from dpdeploy.plan.resolve import Plan
from dpdeploy.fsutil import sha256_file
from dpdeploy.records import build_stamp, env_stamp, smoke_pass
from dpdeploy.records.run import RunRecord
from dpdeploy.records.smoke_pass import SmokePass

SUITE = paths.SMOKE_TESTS
# Names of the JUnit testsuite properties the suite records (smoke_tests/conftest.py).
CHECK_PROPERTY = "densepose_check"


class SmokeError(Exception):
    """The suite cannot start: what, why, next step."""


@dataclass
class SmokeResult:
    ok: bool
    returncode: int
    command: list[str]
    junit: str
    log: str
    counts: dict = field(default_factory=dict)   # tests, failures, errors, skipped
    properties: dict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # "test: reason"

    @property
    def check(self) -> str:
        """Which DensePose check ran, in words ("" when the suite did not get that far)."""
        return self.properties.get(CHECK_PROPERTY, "")

    def summary(self) -> str:
        c = self.counts
        passed = c.get("tests", 0) - c.get("failures", 0) - c.get("errors", 0) - c.get("skipped", 0)
        text = (f"{passed} passed, {c.get('failures', 0)} failed, {c.get('errors', 0)} errors, "
                f"{c.get('skipped', 0)} skipped")
        return text + (f"; {self.check}" if self.check else "")

    def to_dict(self) -> dict:
        return {**asdict(self), "check": self.check, "summary": self.summary()}


def suite_env(plan: Plan, matrix: Matrix, model: str, plan_json: Path, out_dir: Path,
              base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment the suite reads (see smoke_tests/conftest.py for each variable)."""
    spec = w.ModelSpec.from_matrix(matrix, model)
    have = w.final_path(plan.home, spec.name)
    env = {k: v for k, v in base.items() if not k.startswith("DPDEPLOY_")}
    env.update({
        "DPDEPLOY_PLAN_JSON": str(plan_json),
        "DPDEPLOY_HOME": plan.home,
        "DPDEPLOY_MATRIX": matrix.path,
        "DPDEPLOY_MODEL": spec.name,
        # Verified by `invoke weights` before it was moved there; "" = none (pipeline check).
        "DPDEPLOY_WEIGHTS": str(have) if have.is_file() else "",
        "DPDEPLOY_SMOKE_OUT": str(out_dir),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(paths.ROOT), base.get("PYTHONPATH", "")])),
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    return env


def fingerprint(plan: Plan, matrix: Matrix, model: str = "") -> str:
    """What a passing suite vouches for: the env and build stamps, the weights the suite would use
    (their verified sha256, or none), the matrix and the suite itself. Any change reruns it."""
    digest = hashlib.sha256()
    weights = w.final_path(plan.home, w.ModelSpec.from_matrix(matrix, model).name)
    parts = [env_stamp.path(plan.prefix), build_stamp.path(plan.prefix), Path(matrix.path),
             *sorted(SUITE.glob("*.py"))]
    for part in parts:
        digest.update(str(part).encode() + b"\0" + (part.read_bytes() if part.is_file() else b"(missing)"))
    digest.update(sha256_file(weights).encode() if weights.is_file() else b"(no weights: synthetic)")
    return digest.hexdigest()


def command(plan: Plan, junit: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """The pytest command line, run with the env's interpreter from the repository root."""
    return [str(Path(plan.prefix) / "bin" / "python"), "-m", "pytest", str(SUITE.relative_to(paths.ROOT)),
            "-v", "-rs", "-p", "no:cacheprovider", f"--junitxml={junit}", *extra]


def read_junit(path: Path) -> tuple[dict, dict, list[str]]:
    """(counts, testsuite properties, skipped "name: reason") from pytest's JUnit XML."""
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    skipped = [f"{case.get('name')}: {skip.get('message', '')}"
               for case in suite.iter("testcase") for skip in case.findall("skipped")]
    return counts, props, skipped


def check_ready(plan: Plan, run=runner_mod.run) -> None:
    """Refuse early, with the next step, when there is no env or it lacks pytest."""
    python = Path(plan.prefix) / "bin" / "python"
    if not python.exists():
        raise SmokeError(f"no environment at {plan.prefix}\n  why: {python} does not exist\n"
                         "  next: run `invoke setup` (or `invoke setup --only env,build`) first")
    done = run([str(python), "-c", "import pytest"], timeout=60)
    if done is None or not done.ok:
        raise SmokeError(f"pytest is not installed in {plan.prefix}\n  why: the smoke tests run inside the env\n"
                         "  next: re-create the env from a lock that includes pytest (env/matrix.yml runtime pins)")


def run_smoke(plan: Plan, matrix: Matrix, model: str = "", junit: Optional[str] = None,
              extra: tuple[str, ...] = (), record: Optional[RunRecord] = None,
              echo: Callable[[str], None] = print, stream=runner_mod.stream,
              run=runner_mod.run) -> SmokeResult:
    """Run the suite in the env, teeing its output to the run record's log."""
    check_ready(plan, run)
    record = record or RunRecord.create(plan.home, "smoke")
    plan_json = record.write("plan", plan)
    junit_path = Path(junit).resolve() if junit else record.folder / "junit.xml"
    junit_path.parent.mkdir(parents=True, exist_ok=True)
    junit_path.unlink(missing_ok=True)  # never read a stale report
    out_dir = record.folder / "smoke"
    argv = command(plan, junit_path, extra)
    log = record.log_path("smoke")
    rc = stream(argv, log_path=str(log), env=suite_env(plan, matrix, model, plan_json, out_dir),
                cwd=str(paths.ROOT), echo=echo)
    counts, props, skipped = read_junit(junit_path) if junit_path.is_file() else ({}, {}, [])
    result = SmokeResult(rc == 0 and bool(counts), rc, argv, str(junit_path), str(log), counts, props, skipped)
    record.write("smoke", result)
    if result.ok:
        try:
            smoke_pass.write(plan.prefix, SmokePass(fingerprint(plan, matrix, model), record.id, str(junit_path),
                                                    result.summary(), time.strftime("%Y-%m-%dT%H:%M:%S%z")))
        except OSError as err:   # a read-only env (a container's non-root user): the pass just is not remembered
            echo(f"note: the pass is not recorded in {smoke_pass.path(plan.prefix)} ({err.strerror}); "
                 "the next `invoke setup` runs the suite again")
    return result
