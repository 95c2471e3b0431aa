"""`invoke doctor`: live checks of the host and the env, plus a log scan against known failures."""
import sys
from pathlib import Path

from invoke import Exit, task

from dpdeploy.ui import render
from dpdeploy.diagnose.checks import Check, run_checks
from dpdeploy.diagnose.signatures import Report, diagnose
from dpdeploy.plan.resolve import PlanError, resolve
from dpdeploy.cli import common


@task(help={
    "log": "A build or run log to scan for known failure signatures (e.g. <run>/logs/build.log).",
    "json": "Print the checks and findings as JSON.",
    "facts": "Check a recorded facts JSON file instead of this host.",
    "profile": "Force a profile from env/matrix.yml (cu130, cu126, cpu, cpu-slim, cpu-ray, cu130-ray, host); default auto.",
    "prefix": "The environment to check (default <state root>/envs/<profile>).",
    "max_jobs": "The MAX_JOBS to check against RAM (default: from RAM and cores).",
})
def doctor(c, log: str = "", json: bool = False, facts: str = "", profile: str = "", prefix: str = "",
           max_jobs: int = 0) -> None:
    """Explain failures: host/env checks and known signatures in a log, each with the next command."""
    report = Report(log=log or None)
    if log:
        try:
            report.findings = diagnose(Path(log).read_text(encoding="utf-8", errors="replace"))
        except OSError as exc:
            print(render.error_text(OSError(f"cannot read log {log}: {exc.strerror}\n  next: pass a log that "
                                            f"exists (run records keep them in <state root>/runs/<id>/logs/)")),
                  file=sys.stderr)
            raise Exit(code=2) from None
    with common.user_errors(json):
        s = common.settings(c, facts=facts, profile=profile, prefix=prefix, max_jobs=max_jobs)
        found = common.facts(s)
        try:
            resolved = resolve(found, common.load_matrix(s), s)
        except PlanError as err:
            report.checks = [Check("plan", "fail", err.what, "; ".join(err.why), "; ".join(err.next_steps))]
        else:
            report.checks = run_checks(found, resolved, common.load_matrix(s))
    print(render.to_json(report) if json else render.doctor_text(report))
    if not report.ok:
        raise Exit(code=1)
