"""The build step's refusals, dry run, idempotency and failure report (no compiler needed)."""
from dpdeploy.build import wheels
from dpdeploy.build.cache import cache_key, key_fields
from dpdeploy.envs.site import TorchInfo
from dpdeploy.records import build_stamp
from dpdeploy.steps import build
from dpdeploy.steps.pipeline import STEPS, run_step

from .deployed import PIN, context, make_build, make_env, source_tree


def test_registered():
    assert STEPS["build"] is build.run


def test_dry_run_changes_nothing(tmp_path, matrix):
    ctx, _ = context(matrix, tmp_path, dry=True, profile="cu130", arch_list="9.0", source="/somewhere/d2")
    result = run_step("build", ctx)
    assert result.status == "planned"
    assert "TORCH_CUDA_ARCH_LIST='9.0'" in result.output and "/somewhere/d2" in result.output
    assert not (tmp_path / "home").exists() and not (tmp_path / "env").exists()


def test_missing_env_is_refused(tmp_path, matrix):
    result = run_step("build", context(matrix, tmp_path, profile="cu130", arch_list="9.0")[0])
    assert result.status == "failed" and "run invoke env first" in result.output


def test_env_of_another_profile_is_refused(tmp_path, matrix, monkeypatch):
    assert make_env(matrix, tmp_path, monkeypatch, profile="cpu").status == "done"
    result = run_step("build", context(matrix, tmp_path, profile="cu130", arch_list="9.0")[0])
    assert result.status == "failed" and "made for profile cpu" in result.output


def test_unpinned_source_is_refused(tmp_path, matrix, monkeypatch):
    make_env(matrix, tmp_path, monkeypatch, profile="cu130")
    tree = source_tree(tmp_path, "f" * 40)
    result = run_step("build", context(matrix, tmp_path, profile="cu130", arch_list="9.0", source=str(tree))[0])
    assert result.status == "failed" and f"pins {PIN}" in result.output and "--allow-unpinned" in result.output


def test_build_stamps_then_is_up_to_date_until_c_changes(tmp_path, matrix, monkeypatch):
    make_env(matrix, tmp_path, monkeypatch, profile="cu130")
    first, ctx, _ = make_build(matrix, tmp_path, monkeypatch, profile="cu130", arch_list="9.0")
    assert first.status == "done" and "archs sm_90, compute_90" in first.output, first.output
    stamp = build_stamp.read(ctx.plan.prefix)
    assert (stamp.commit, stamp.compiled_archs, stamp.arch_list, stamp.force_cuda) == \
        (PIN, ["sm_90", "compute_90"], "9.0", True)
    again, _, _ = make_build(matrix, tmp_path, monkeypatch, profile="cu130", arch_list="9.0")
    assert again.status == "up-to-date" and again.detail["key"] == stamp.key
    (tmp_path / "env" / "lib" / "python3.11" / "site-packages" / "detectron2" / "_C.so").write_bytes(b"replaced")
    assert build.up_to_date(tmp_path / "env", stamp.key) is None


def test_cpu_build_says_so(tmp_path, matrix, monkeypatch):
    make_env(matrix, tmp_path, monkeypatch, profile="cpu")
    result, ctx, _ = make_build(matrix, tmp_path, monkeypatch, profile="cpu")
    assert result.status == "done" and "archs none (CPU build)" in result.output
    assert build_stamp.read(ctx.plan.prefix).archs_text() == "none (CPU build)"


def test_build_failure_shows_the_doctors_title_cause_and_next(tmp_path, matrix, monkeypatch):
    log = tmp_path / "build.log"
    log.write_text("compiling\nerror: #error -- unsupported GNU version! gcc versions later than 15 are not "
                   "supported! The nvcc flag '-allow-unsupported-compiler' can be used to override this version check\n")

    def fail(*args, **kwargs):
        raise wheels.BuildError("pip wheel for detectron2 failed (exit 1)", log)

    make_env(matrix, tmp_path, monkeypatch, profile="cu130")
    monkeypatch.setattr(build.wheels, "compile_wheels", fail)
    ctx, _ = context(matrix, tmp_path, profile="cu130", arch_list="9.0", source=str(source_tree(tmp_path)))
    result = run_step("build", ctx)
    assert result.status == "failed"
    assert "unsupported GNU version" in result.output and str(log) in result.output
    assert "[FAIL] gcc-too-new-for-nvcc:" in result.output
    assert "why: " in result.output and "next: " in result.output and "Finding(" not in result.output


def test_cache_key_changes_with_the_tree_content_at_the_same_commit(tmp_path, matrix):
    ctx, _ = context(matrix, tmp_path, profile="cu130", arch_list="9.0")
    torch = TorchInfo("3.11", "2.14.1+cu130", "13.0")
    keys = {cache_key(key_fields(PIN, torch, ctx.plan, "x86_64", tree)) for tree in ("a" * 64, "b" * 64)}
    assert len(keys) == 2


def test_a_damaged_wheel_cache_entry_is_reported_as_damaged_not_as_a_miss(tmp_path, matrix, monkeypatch):
    make_env(matrix, tmp_path, monkeypatch, profile="cu130")
    first, ctx, _ = make_build(matrix, tmp_path, monkeypatch, profile="cu130", arch_list="9.0")
    assert first.detail["cache"] == "miss"
    key = first.detail["key"]
    wheel = next((tmp_path / "home" / "cache" / "wheels" / key).glob("*.whl"))
    wheel.write_bytes(b"truncated")
    build_stamp.path(ctx.plan.prefix).unlink()                  # the env needs its wheels again
    again, _, lines = make_build(matrix, tmp_path, monkeypatch, profile="cu130", arch_list="9.0")
    assert again.status == "done" and again.detail["cache"] == "damaged"
    assert "does not match its sha256" in again.detail["cache_damage"] and "damaged" in again.output
    assert any("wheel cache entry DAMAGED" in line and wheel.name in line for line in lines)
