"""The safety nets issue 16 mutation-checks, each on its real code path: the wheel cache is
consulted before compiling, the build verification fails on a missing GPU arch, and setup stops
at the first failed step. (The worker's per-file error handling: tests/test_predict.py.)"""
import json
from types import SimpleNamespace

import pytest

from dpdeploy.build import fatbin, verification
from dpdeploy.records import build_stamp
from dpdeploy.records.run import StepResult
from dpdeploy.steps import build as build_step
from dpdeploy.steps import pipeline

from .deployed import context, make_build, make_env


def test_a_second_build_takes_the_wheels_from_the_cache(tmp_path, matrix, monkeypatch):
    make_env(matrix, tmp_path, monkeypatch, profile="cu130")
    first, ctx, _ = make_build(matrix, tmp_path, monkeypatch, profile="cu130", arch_list="9.0")
    assert first.status == "done" and first.detail["cache"] == "miss"
    build_stamp.path(ctx.plan.prefix).unlink()   # not up to date any more: the wheels must come from the cache

    def no_compile(*args, **kwargs):
        raise AssertionError("compiled again although the wheel cache holds this key")

    monkeypatch.setattr(build_step.wheels, "compile_wheels", no_compile)
    again = build_step.run(ctx)
    assert again.status == "done" and again.detail["cache"] == "hit", again.output


@pytest.mark.parametrize("gpu, ok", [("9.0", True), ("12.0", False)])
def test_verification_fails_when_the_built_archs_miss_a_gpu(monkeypatch, gpu, ok):
    """_C holds sm_90 only: fine on an H100 (9.0), a failure that names sm_120 on a 12.0 GPU."""
    plan = SimpleNamespace(torch_cuda_arch_list="9.0", gpus=[{"compute_capability": gpu}], force_cuda=True)
    monkeypatch.setattr(verification, "compiled_archs", lambda so: {fatbin.Arch("sm", 90)})
    found = json.dumps({"c_path": "/x/_C.so", "problems": [], "gpu": ""})
    done = SimpleNamespace(ok=True, stdout=found + "\n", stderr="")
    checked = verification.verify(plan, "python", run=lambda argv, timeout: done)
    assert checked.ok is ok, checked.problems
    assert ok or any("12" in p for p in checked.problems), checked.problems


def test_setup_stops_at_the_first_failed_step(tmp_path, matrix, monkeypatch):
    ctx, lines = context(matrix, tmp_path)
    ran = []

    def step(name, status):
        return lambda c: ran.append(name) or StepResult(name, status)

    monkeypatch.setattr(pipeline, "STEPS", {"env": step("env", "done"), "build": step("build", "failed"),
                                            "weights": step("weights", "done"), "smoke": step("smoke", "done"),
                                            "report": step("report", "done")})
    result = pipeline.run(ctx.facts, ctx.plan, ctx.settings, matrix, echo=lines.append)
    assert ran == ["env", "build"] and not result.ok
    assert [s.name for s in result.steps] == ["env", "build"]
    assert json.loads((result.record.folder / "result.json").read_text())["status"] == "failed"
