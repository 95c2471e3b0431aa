"""`invoke smoke`: the command it builds, the GPU gate of smoke_tests/, and (with a detectron2
env) the real suite."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dpdeploy.plan import matrix as matrix_mod
from dpdeploy.inference import smoke
from dpdeploy.plan.resolve import resolve
from dpdeploy.plan.settings import resolve as settings

from .conftest import ROOT, facts_fixture


def load_smoke_conftest():
    spec = importlib.util.spec_from_file_location("smoke_conftest", ROOT / "smoke_tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("require, visible, expected", [
    (False, 0, "skip"),
    (True, 0, "fail"),
    (False, 2, None),
    (True, 1, None),
])
def test_gpu_gate(require, visible, expected):
    decision = load_smoke_conftest().gpu_gate(require, visible, "torch.cuda.is_available() is False")
    assert (decision[0] if decision else None) == expected
    if decision:
        assert "no GPU visible to torch (torch.cuda.is_available() is False)" in decision[1]
        assert decision[1].startswith("REQUIRE_GPU=1") == require


def plan_for(tmp_path, prefix=None):
    return resolve(facts_fixture("nogpu"), matrix_mod.load(),
                   settings({"home": str(tmp_path / "home"), "prefix": str(prefix or tmp_path / "env")}, env={}))


def test_command_runs_pytest_on_the_suite_with_the_env_python(tmp_path):
    plan = plan_for(tmp_path)
    argv = smoke.command(plan, tmp_path / "out.xml", ("-k", "versions"))
    assert argv[:4] == [str(tmp_path / "env" / "bin" / "python"), "-m", "pytest", "smoke_tests"]
    assert f"--junitxml={tmp_path / 'out.xml'}" in argv and argv[-2:] == ["-k", "versions"]


def test_suite_env_names_the_plan_and_weights(tmp_path, matrix):
    plan = plan_for(tmp_path)
    base = {"PATH": "/usr/bin", "DPDEPLOY_WEIGHTS": "/stale/from/the/caller", "PYTHONPATH": "/x"}
    env = smoke.suite_env(plan, matrix, "", tmp_path / "plan.json", tmp_path / "out", base=base)
    assert env["DPDEPLOY_PLAN_JSON"] == str(tmp_path / "plan.json") and env["PATH"] == "/usr/bin"
    assert env["DPDEPLOY_MODEL"] == matrix.default_model
    assert env["DPDEPLOY_WEIGHTS"] == ""  # nothing cached: the pipeline check
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "/x"]
    cached = Path(plan.home) / "cache" / "weights" / f"{matrix.default_model}.pkl"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    env = smoke.suite_env(plan, matrix, "", tmp_path / "plan.json", tmp_path / "out", base=base)
    assert env["DPDEPLOY_WEIGHTS"] == str(cached)


def test_missing_env_is_a_clear_refusal(tmp_path, matrix):
    with pytest.raises(smoke.SmokeError, match="(?s)no environment at .*invoke setup"):
        smoke.run_smoke(plan_for(tmp_path), matrix)


def fake_prefix(tmp_path) -> Path:
    """A prefix whose python is this interpreter (has pytest, no torch): enough for the gpu tests."""
    prefix = tmp_path / "env"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "python").symlink_to(sys.executable)
    return prefix


@pytest.mark.parametrize("require_gpu", ["", "1"])
def test_suite_gpu_tests_skip_or_fail_for_real(tmp_path, matrix, monkeypatch, require_gpu):
    """The real pytest run of smoke_tests -m gpu in an interpreter without torch (no GPU)."""
    monkeypatch.setenv("REQUIRE_GPU", require_gpu)
    plan = plan_for(tmp_path, prefix=fake_prefix(tmp_path))
    lines = []
    result = smoke.run_smoke(plan, matrix, junit=str(tmp_path / "out.xml"), extra=("-m", "gpu"), echo=lines.append)
    assert result.counts["tests"] == 3
    assert result.check == "pipeline check without real weights (synthetic checkpoint)"
    if require_gpu:
        assert not result.ok and result.counts["failures"] + result.counts["errors"] == 3
        assert any("REQUIRE_GPU=1 but no GPU visible to torch" in line for line in lines)
    else:
        assert result.ok and result.counts["skipped"] == 3
        assert all("no GPU visible to torch (torch is not importable here" in s for s in result.skipped)
    assert Path(result.junit) == tmp_path / "out.xml" and "smoke_tests/test_gpu.py" in Path(result.log).read_text()


@pytest.mark.slow
@pytest.mark.detectron2
def test_invoke_smoke_passes_without_real_weights(d2_env, tmp_path):
    """The whole suite in a real detectron2 env, as a user runs it (minutes on a CPU); the DensePose
    configs are the ones the build step installed into the env."""
    junit = tmp_path / "out.xml"
    env = {**os.environ, "NO_COLOR": "1", "DPDEPLOY_HOME": str(tmp_path / "home"), "DPDEPLOY_PREFIX": str(d2_env)}
    proc = subprocess.run([sys.executable, "-m", "invoke", "smoke", "--junit", str(junit)], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "pipeline check without real weights" in proc.stdout
    assert "test_densepose_on_the_sample_photos[pipeline-check-without-real-weights] PASSED" in proc.stdout
    assert 'name="densepose_check" value="pipeline check without real weights' in junit.read_text()
