"""The CI workflows are valid GitHub Actions (actionlint, from the tools venv)."""
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from .conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def actionlint() -> str:
    beside = Path(sys.executable).parent / "actionlint"
    found = str(beside) if beside.exists() else shutil.which("actionlint")
    assert found, "actionlint is missing: it comes with requirements/tools.txt (python3 bootstrap.py)"
    return found


def test_actionlint_passes_on_the_workflows():
    assert WORKFLOWS, "no workflows under .github/workflows"
    proc = subprocess.run([actionlint(), "-no-color", *map(str, WORKFLOWS)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo ${{ github.no_such_context }}\n")
    proc = subprocess.run([actionlint(), "-no-color", str(bad)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "no_such_context" in proc.stdout


def test_gpu_job_runs_setup_verify_smoke_and_uploads():
    flow = yaml.safe_load((ROOT / ".github" / "workflows" / "deploy-gpu.yml").read_text())
    gpu = flow["jobs"]["gpu"]
    assert "self-hosted" in gpu["runs-on"] and gpu["env"]["REQUIRE_GPU"] == "1"
    runs = "\n".join(step.get("run", "") for step in gpu["steps"])
    for needle in ("bootstrap.py setup", "invoke verify --junit", "--only smoke"):
        assert needle in runs
    assert any(step.get("uses", "").startswith("actions/upload-artifact") for step in gpu["steps"])
    assert "cpu" in flow["jobs"]
