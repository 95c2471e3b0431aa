"""A no-op setup does not rerun a smoke suite that passed on the same env, build and weights."""
from dpdeploy.inference import smoke
from dpdeploy.records import build_stamp, smoke_pass
from dpdeploy.records.run import RunRecord
from dpdeploy.runner import Completed
from dpdeploy.steps import smoke as smoke_step

from .deployed import context, make_build, make_env

JUNIT = ('<testsuites><testsuite name="pytest" tests="2" failures="0" errors="0" skipped="0">'
         '<testcase classname="smoke_tests.test_versions" name="test_a"/>'
         '<testcase classname="smoke_tests.test_versions" name="test_b"/></testsuite></testsuites>')


def passing_suite(argv, log_path, env=None, echo=print, cwd=None):
    """Stands in for pytest inside the env: writes the JUnit report a passing suite writes."""
    junit = next(a.split("=", 1)[1] for a in argv if a.startswith("--junitxml="))
    open(junit, "w").write(JUNIT)
    open(log_path, "w").write("2 passed\n")
    return 0


def deployed_and_smoked(matrix, tmp_path, monkeypatch, **values):
    make_env(matrix, tmp_path, monkeypatch, profile="cpu")
    make_build(matrix, tmp_path, monkeypatch, profile="cpu")
    ctx, _ = context(matrix, tmp_path, profile="cpu", **values)
    record = RunRecord.create(ctx.plan.home, "smoke")
    result = smoke.run_smoke(ctx.plan, matrix, record=record, stream=passing_suite,
                             run=lambda argv, **k: Completed(tuple(argv), 0, "", ""))
    assert result.ok and smoke_pass.read(ctx.plan.prefix).run == record.id
    return ctx


def test_unchanged_deployment_confirms_the_last_pass(matrix, tmp_path, monkeypatch):
    ctx = deployed_and_smoked(matrix, tmp_path, monkeypatch)
    monkeypatch.setattr(smoke_step, "run_smoke", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    result = smoke_step.run(ctx)
    assert result.status == "up-to-date" and "--force-smoke" in result.output and "2 passed" in result.output


def test_a_changed_build_or_force_smoke_runs_the_suite(matrix, tmp_path, monkeypatch):
    ctx = deployed_and_smoked(matrix, tmp_path, monkeypatch)
    ran = []
    monkeypatch.setattr(smoke_step, "run_smoke", lambda *a, **k: ran.append(1) or smoke.SmokeResult(True, 0, [], "", ""))
    forced, _ = context(matrix, tmp_path, profile="cpu", force_smoke=True)
    assert smoke_step.run(forced).status == "done" and ran == [1]
    stamp = build_stamp.read(ctx.plan.prefix)
    build_stamp.write(ctx.plan.prefix, stamp.__class__(**{**stamp.__dict__, "key": "rebuilt"}))
    assert smoke_step.run(ctx).status == "done" and ran == [1, 1]


def test_a_read_only_env_still_passes_its_smoke(matrix, tmp_path, monkeypatch):
    """A container's non-root user cannot write into the env: the suite passes, the pass is not kept."""
    make_env(matrix, tmp_path, monkeypatch, profile="cpu")
    make_build(matrix, tmp_path, monkeypatch, profile="cpu")
    ctx, _ = context(matrix, tmp_path, profile="cpu")

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(smoke.smoke_pass, "write", read_only)
    lines = []
    result = smoke.run_smoke(ctx.plan, matrix, record=RunRecord.create(ctx.plan.home, "smoke"), stream=passing_suite,
                             run=lambda argv, **k: Completed(tuple(argv), 0, "", ""), echo=lines.append)
    assert result.ok and any("the pass is not recorded" in line for line in lines)
