"""The tasks as a user runs them: real `invoke` subprocesses."""
import json
import os
import subprocess
import sys
from pathlib import Path

from .conftest import FIXTURES, ROOT

INVOKE = [sys.executable, "-m", "invoke"]


def invoke(*args, env=None, check=True):
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    proc = subprocess.run([*INVOKE, *args], cwd=ROOT, capture_output=True, text=True, env=full_env, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_plan_h100_json():
    out = json.loads(invoke("plan", "--facts", str(FIXTURES / "facts" / "h100.json"), "--json").stdout)
    assert out["profile"] == "cu130" and "9.0" in out["torch_cuda_arch_list"]
    assert {"max_jobs", "reasons", "steps"} <= set(out)
    assert [s["name"] for s in out["steps"]][0] == "env"


def test_plan_v100_not_cu130():
    out = json.loads(invoke("plan", "--facts", str(FIXTURES / "facts" / "v100.json"), "--json").stdout)
    assert out["profile"] != "cu130" and "cu130" in out["rejected"]


def test_refusal_exit_code_and_message():
    proc = invoke("plan", "--facts", str(FIXTURES / "facts" / "driver470.json"), check=False)
    assert proc.returncode == 2
    assert "no profile fits this host" in proc.stderr and "next:" in proc.stderr
    proc = invoke("plan", "--facts", str(FIXTURES / "facts" / "driver470.json"), "--json", check=False)
    assert proc.returncode == 2 and json.loads(proc.stdout)["error"] == "no profile fits this host"


def test_facts_json_on_this_host(tmp_path):
    out = json.loads(invoke("facts", "--json", env={"DPDEPLOY_HOME": str(tmp_path)}).stdout)
    assert out["system"] == "Linux" and isinstance(out["gpus"], list)
    if not out["gpus"]:
        assert out["notes"], "a GPU-less host must say why no GPU was found"


def test_env_var_setting_reaches_the_plan(tmp_path):
    out = json.loads(invoke("plan", "--facts", str(FIXTURES / "facts" / "nogpu.json"), "--json",
                            env={"DPDEPLOY_PROFILE": "cu130", "DPDEPLOY_HOME": str(tmp_path)}).stdout)
    assert out["profile"] == "cu130" and out["prefix"] == str(tmp_path / "envs" / "cu130")


def test_bad_facts_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "facts.json"
    bad.write_text("[]")
    proc = invoke("plan", "--facts", str(bad), check=False)
    assert proc.returncode == 2 and "must hold a JSON object" in proc.stderr


def test_setup_dry_changes_nothing(tmp_path):
    proc = invoke("setup", "--dry", "--facts", str(FIXTURES / "facts" / "nogpu.json"), env={"DPDEPLOY_HOME": str(tmp_path)},
                  check=False)
    assert "Plan" in proc.stdout and "==> env" in proc.stdout
    assert not any(Path(tmp_path).iterdir()), "a dry run must not write state"
