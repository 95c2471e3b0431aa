"""`invoke verify`: is the deployed env still what the lock and the matrix say?"""
from pathlib import Path

from invoke import Exit, task

from dpdeploy.ui import render
from dpdeploy.fsutil import atomic_write_text
from dpdeploy.diagnose.drift import junit_xml, verify as run_verify
from dpdeploy.inference.predict import check_writable_file
from dpdeploy.inference.weights import weights_check
from dpdeploy.cli import common


@task(help={
    "json": "Print the result (checks and differences) as JSON.",
    "junit": "Also write a JUnit XML report (one testcase per check) to this file.",
    "lock": "The lock file to compare with (default env/locks/<profile>.txt).",
    "facts": "Use a recorded facts JSON file (its GPUs) instead of probing this host.",
    "profile": "Force a profile from env/matrix.yml (cu130, cu126, cpu, cpu-slim, cpu-ray, cu130-ray, host); default auto.",
    "prefix": "The environment to verify (default <state root>/envs/<profile>).",
})
def verify(c, json: bool = False, junit: str = "", lock: str = "", facts: str = "", profile: str = "",
           prefix: str = "") -> None:
    """Check the deployed env against its lock, the matrix and this host's GPUs; exit 1 on drift."""
    with common.user_errors(json):
        s = common.settings(c, facts=facts, profile=profile, prefix=prefix)
        if junit:
            check_writable_file(Path(junit), "--junit")
        found, resolved = common.plan(s)
        result = run_verify(found, resolved, common.load_matrix(s), lock or None)
        result.checks.append(weights_check(Path(resolved.home), common.load_matrix(s)))
    if junit:
        atomic_write_text(junit, junit_xml(result))
    print(render.to_json(result) if json else render.verify_text(result))
    if not result.ok:
        raise Exit(code=1)
