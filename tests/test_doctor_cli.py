"""`invoke doctor` end to end: real invoke subprocesses on the log fixtures."""
import json
import os
import subprocess
import sys

import pytest

from .conftest import FIXTURES, ROOT

NOGPU = str(FIXTURES / "facts" / "nogpu.json")


def doctor(tmp_path, *args):
    env = {**os.environ, "NO_COLOR": "1", "DPDEPLOY_HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "invoke", "doctor", "--facts", NOGPU, *args], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("log", ["cusparse-header-missing", "compiler-oom-killed", "matplotlib-tostring-rgb"])
def test_doctor_json_names_cause_and_fix_and_exits_1(tmp_path, log):
    proc = doctor(tmp_path, "--log", str(FIXTURES / "logs" / f"{log}.log"), "--json")
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert not out["ok"] and [f["id"] for f in out["findings"]] == [log]
    finding = out["findings"][0]
    assert finding["cause"] and "invoke " in finding["fix"] and finding["line_no"] > 1
    checks = {c["name"]: c for c in out["checks"]}
    assert checks["densepose-import"]["what"].startswith("env not created")
    assert checks["densepose-import"]["next"] == "invoke env"


def test_doctor_text_shows_what_why_next(tmp_path):
    proc = doctor(tmp_path, "--log", str(FIXTURES / "logs" / "compiler-oom-killed.log"))
    assert proc.returncode == 1
    assert "compiler-oom-killed" in proc.stdout and "why:" in proc.stdout
    assert "next: Build with fewer parallel jobs: `invoke build --max-jobs 1`" in proc.stdout


def test_doctor_on_a_clean_log_passes(tmp_path):
    proc = doctor(tmp_path, "--log", str(FIXTURES / "logs" / "clean_build.log"))
    assert proc.returncode == 0, proc.stdout
    assert "no known failure signature found" in proc.stdout


def test_doctor_warn_level_finding_does_not_fail(tmp_path):
    proc = doctor(tmp_path, "--log", str(FIXTURES / "logs" / "contour-tiny-box.log"), "--json")
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["findings"][0]["level"] == "warn"


def test_doctor_missing_log_is_a_clear_error(tmp_path):
    proc = doctor(tmp_path, "--log", str(tmp_path / "nope.log"))
    assert proc.returncode == 2 and "cannot read log" in proc.stderr and "next:" in proc.stderr


def test_doctor_reports_a_host_no_profile_fits(tmp_path):
    env = {**os.environ, "NO_COLOR": "1", "DPDEPLOY_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "invoke", "doctor", "--facts", str(FIXTURES / "facts" / "driver470.json"),
                           "--json"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    check = json.loads(proc.stdout)["checks"][0]
    assert check["name"] == "plan" and check["status"] == "fail" and check["next"]
