"""Each on-disk record written by its real producer and read by every consumer.

The env and build stamps come from the real env and build steps (``tests/deployed.py``: only
pip and the C++ compile stand in) run through the real pipeline; the doctor's checks,
``invoke verify``'s drift checks, the versions table and the report then read them.
"""
import json
import time

import pytest

from dpdeploy.diagnose import checks, drift
from dpdeploy.records import build_stamp, env_stamp, run, versions
from dpdeploy.records.schema import RecordError
from dpdeploy.report import write as write_report
from dpdeploy.runner import Completed
from dpdeploy.steps import env as env_step
from dpdeploy.steps import pipeline

from .deployed import FakeStream, context, make_build

ENV_ROWS = ("CUDA (torch build)", "TORCH_CUDA_ARCH_LIST", "compiled archs")


def deploy(matrix, tmp_path, monkeypatch, facts="nogpu", **values):
    """env + build through the pipeline, as `invoke setup --only env,build` runs them."""
    monkeypatch.setattr(env_step, "stream", FakeStream())
    make_build(matrix, tmp_path, monkeypatch, facts=facts, **values)  # installs the build stand-ins
    for stale in (env_stamp.path(tmp_path / "env"), build_stamp.path(tmp_path / "env")):
        stale.unlink(missing_ok=True)
    ctx, _ = context(matrix, tmp_path, facts=facts, source=str(tmp_path / "src"), **values)
    done = pipeline.run(ctx.facts, ctx.plan, ctx.settings, ctx.matrix, only=("env", "build"), echo=lambda line: None)
    assert done.ok, [s.output for s in done.steps]
    return ctx, done


def rows(prefix):
    return {v.name: v.value for v in versions.collect(prefix)}


def test_cpu_deployment_reads_the_same_everywhere(matrix, tmp_path, monkeypatch):
    ctx, done = deploy(matrix, tmp_path, monkeypatch, profile="cpu")
    prefix = ctx.plan.prefix
    table = rows(prefix)
    assert [table[n] for n in ENV_ROWS] == ["13.0", "none (CPU build)", "none (CPU build)"]
    assert "not recorded" not in json.dumps(table)
    arch = next(c for c in checks.run_checks(ctx.facts, ctx.plan, matrix, runner=lambda *a, **k: None)
                if c.name == "compiled-archs")
    assert arch.status == "ok" and "compiled archs: none (CPU build)" in arch.what
    assert drift.commit_check(checks.read_build_stamp(prefix)[0], matrix, prefix).status == "ok"
    # the report reads the run's versions.json, written by the pipeline from the stamps
    out = tmp_path / "report"
    write_report(done.record.folder, None, out, formats=("md",))
    text = (out / "report.md").read_text()
    assert "| compiled archs | none (CPU build) |" in text and "not recorded" not in text
    result = run.read_result(done.record.folder)
    assert (result.kind, result.status, result.steps) == ("setup", "done", ["env", "build"])


def test_gpu_build_archs_reach_doctor_and_verify(matrix, tmp_path, monkeypatch):
    ctx, _ = deploy(matrix, tmp_path, monkeypatch, profile="cu130", arch_list="9.0")
    prefix, h100 = ctx.plan.prefix, context(matrix, tmp_path, facts="h100")[0].facts
    assert rows(prefix)["compiled archs"] == "sm_90, compute_90"
    assert rows(prefix)["TORCH_CUDA_ARCH_LIST"] == "9.0"
    arch = checks.arch_check(checks.read_build_stamp(prefix)[0], h100.gpus, True)
    assert arch.status == "ok" and "sm_90" in arch.what
    # the same stamp on a host with a GPU it was not built for
    other = checks.arch_check(checks.read_build_stamp(prefix)[0], context(matrix, tmp_path, facts="a100")[0].facts.gpus,
                              True)
    assert other.status == "fail" and "no kernel image" in other.why
    checked = drift.verify(h100, ctx.plan, matrix, runner=lambda argv, **k: Completed(tuple(argv), 1, "", "no interpreter"))
    names = {c.name: c.status for c in checked.checks}
    assert names["detectron2-commit"] == "ok" and names["compiled-archs"] == "ok"


@pytest.mark.parametrize("content, says", [
    ("{half", "damaged (not JSON"),
    ('{"commit": "x", "compiled_archs": ["sm_90"]}', "older dpdeploy (no schema version)"),
    ('{"schema_version": 99}', "schema version 99"),
    ('{"schema_version": 1, "commit": "x"}', "lacks"),
    ("[1, 2]", "a JSON list, not an object"),
])
def test_damaged_or_old_stamp_is_a_clear_message(tmp_path, content, says):
    build_stamp.path(tmp_path).write_text(content)
    with pytest.raises(RecordError, match=r"build stamp .*") as err:
        build_stamp.read(tmp_path)
    assert says in str(err.value) and "next: invoke build" in str(err.value)
    stamp, problems = checks.read_build_stamp(str(tmp_path))
    assert stamp is None and problems[0].status == "fail" and says in problems[0].what
    assert says in rows(tmp_path)["build stamp"]


def test_damaged_env_stamp_is_redone_not_trusted(matrix, tmp_path):
    (tmp_path / "env").mkdir()
    env_stamp.path(tmp_path / "env").write_text('{"profile": "cpu"}')
    assert env_step.read_stamp(tmp_path / "env") is None
    with pytest.raises(RecordError, match="older dpdeploy"):
        env_stamp.read(tmp_path / "env")


def test_interrupted_run_is_recorded_as_such(matrix, tmp_path, monkeypatch):
    ctx, _ = context(matrix, tmp_path, profile="cpu")

    def killed(step_ctx):
        raise KeyboardInterrupt

    monkeypatch.setitem(pipeline.STEPS, "env", killed)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(ctx.facts, ctx.plan, ctx.settings, ctx.matrix, only=("env",), echo=lambda line: None)
    [folder] = (tmp_path / "home" / "runs").iterdir()
    assert run.read_result(folder).status == "interrupted"


def test_a_no_op_setup_points_at_the_report_that_documents_it(matrix, tmp_path, monkeypatch):
    ctx, _ = deploy(matrix, tmp_path, monkeypatch, profile="cpu")
    steps = ("env", "build", "report")
    first = pipeline.run(ctx.facts, ctx.plan, ctx.settings, ctx.matrix, only=steps, echo=lambda line: None)
    assert [s.status for s in first.steps] == ["up-to-date", "up-to-date", "done"]
    time.sleep(1.1)   # run ids are per second
    again = pipeline.run(ctx.facts, ctx.plan, ctx.settings, ctx.matrix, only=steps, echo=lambda line: None)
    assert again.steps[-1].status == "up-to-date" and first.record.id in again.steps[-1].output
    time.sleep(1.1)
    run.RunRecord.create(ctx.plan.home, "predict")   # a newer predict run: the document changes
    time.sleep(1.1)
    third = pipeline.run(ctx.facts, ctx.plan, ctx.settings, ctx.matrix, only=steps, echo=lambda line: None)
    assert third.steps[-1].status == "done"
