"""The build step's refusals, dry run and idempotency (no compiler needed)."""
import json
import sys
import types


from dpdeploy.build import wheels as builder
from dpdeploy.fsutil import sha256_file
from dpdeploy.plan.resolve import resolve
from dpdeploy.plan.settings import resolve as settings
from dpdeploy.steps import StepContext, build, run_step
from dpdeploy.build.cache import cache_key
from dpdeploy.build.source import tree_hash

from .conftest import facts_fixture

PIN = "02b5c4e295e990042a714712c21dc79b731e8833"


def context(tmp_path, matrix, dry=False, **values):
    s = settings({"home": str(tmp_path / "home"), "prefix": str(tmp_path / "env"), "profile": "cu130",
                  "arch_list": "9.0", **values}, env={})
    lines = []
    return StepContext(resolve(facts_fixture("nogpu"), matrix, s), facts_fixture("nogpu"), s, None, dry,
                       lines.append), lines


def env_with_stamp(tmp_path, profile="cu130"):
    site = tmp_path / "env" / "lib" / "python3.11" / "site-packages"
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "version.py").write_text("__version__ = '2.14.1+cu130'\ncuda: Optional[str] = '13.0'\n")
    (tmp_path / "env" / build.ENV_STAMP).write_text(json.dumps({"profile": profile}))
    return site


def marked_tree(tmp_path, commit=PIN):
    tree = tmp_path / "src"
    tree.mkdir()
    (tree / ".dpdeploy-commit").write_text(commit)
    return tree


def test_registered():
    from dpdeploy.steps import REGISTRY
    assert REGISTRY["build"] is build.run


def test_dry_run_changes_nothing(tmp_path, matrix):
    ctx, _ = context(tmp_path, matrix, dry=True, source="/somewhere/d2")
    result = run_step("build", ctx)
    assert result.status == "planned"
    assert "TORCH_CUDA_ARCH_LIST='9.0'" in result.output and "/somewhere/d2" in result.output
    assert not (tmp_path / "home").exists() and not (tmp_path / "env").exists()


def test_missing_env_is_refused(tmp_path, matrix):
    ctx, _ = context(tmp_path, matrix)
    result = run_step("build", ctx)
    assert result.status == "failed" and "run invoke env first" in result.output


def test_env_of_another_profile_is_refused(tmp_path, matrix):
    env_with_stamp(tmp_path, profile="cpu")
    result = run_step("build", context(tmp_path, matrix)[0])
    assert result.status == "failed" and "made for profile cpu" in result.output


def test_unpinned_source_is_refused_then_recorded(tmp_path, matrix):
    env_with_stamp(tmp_path)
    tree = marked_tree(tmp_path, "f" * 40)
    result = run_step("build", context(tmp_path, matrix, source=str(tree))[0])
    assert result.status == "failed" and f"pins {PIN}" in result.output and "--allow-unpinned" in result.output


def test_up_to_date_when_stamp_key_and_installed_c_match(tmp_path, matrix):
    site = env_with_stamp(tmp_path)
    (site / "densepose").mkdir()
    (site / "densepose" / "__init__.py").write_text("")
    c_so = site / "detectron2" / "_C.so"
    c_so.parent.mkdir()
    c_so.write_bytes(b"compiled")
    src = marked_tree(tmp_path)
    ctx, _ = context(tmp_path, matrix, source=str(src))
    key = cache_key(build.key_fields(PIN, build.env_info(tmp_path / "env"), ctx.plan, "x86_64", tree_hash(src)))
    stamp = {"key": key, "c_path": str(c_so), "c_sha256": sha256_file(c_so), "archs": ["sm_90"]}
    (tmp_path / "env" / build.BUILD_STAMP).write_text(json.dumps(stamp))
    result = run_step("build", ctx)
    assert result.status == "up-to-date" and "sm_90" in result.output and result.detail["key"] == key
    c_so.write_bytes(b"replaced by someone")
    assert build.up_to_date(tmp_path / "env", key) is None


def test_env_info_reads_torch_and_python(tmp_path):
    env_with_stamp(tmp_path)
    assert build.env_info(tmp_path / "env") == {"python": "3.11", "torch": "2.14.1+cu130", "torch_cuda": "13.0"}


def test_build_failure_shows_log_tail_and_diagnosis(tmp_path, matrix, monkeypatch):
    log = tmp_path / "build.log"
    log.write_text("compiling\nerror: unsupported GNU version! gcc versions later than 15\n")

    def fail(*args, **kwargs):
        raise builder.BuildError("pip wheel for detectron2 failed (exit 1)", log)

    env_with_stamp(tmp_path)
    monkeypatch.setattr(build, "compile_wheels", fail)
    monkeypatch.setattr(build, "diagnose", lambda text: "gcc too new: " + str("unsupported GNU" in text))
    result = run_step("build", context(tmp_path, matrix, source=str(marked_tree(tmp_path)))[0])
    assert result.status == "failed"
    assert "unsupported GNU version" in result.output and str(log) in result.output
    assert "gcc too new: True" in result.output


def test_diagnose_adapter(monkeypatch):
    import dpdeploy.diagnose as package
    # an earlier import (e.g. collecting test_doctor.py) leaves the module as the package's attribute
    monkeypatch.delattr(package, "signatures", raising=False)
    monkeypatch.setitem(sys.modules, "dpdeploy.diagnose.signatures", None)  # makes the import fail
    assert build.diagnose("anything") == ""
    doctor = types.ModuleType("dpdeploy.diagnose.signatures")
    doctor.diagnose = lambda text: ["cause: " + text, None]
    monkeypatch.setitem(sys.modules, "dpdeploy.diagnose.signatures", doctor)
    monkeypatch.setattr(package, "signatures", doctor, raising=False)
    assert build.diagnose("x") == "cause: x"


def test_cache_key_changes_with_the_tree_content_at_the_same_commit(tmp_path, matrix):
    ctx, _ = context(tmp_path, matrix)
    info = {"python": "3.11", "torch": "2.14.1+cu130", "torch_cuda": "13.0"}
    keys = {cache_key(build.key_fields(PIN, info, ctx.plan, "x86_64", tree)) for tree in ("a" * 64, "b" * 64)}
    assert len(keys) == 2
