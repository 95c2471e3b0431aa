"""Live checks from facts + plan, with commands answered by an injected runner."""

from dpdeploy.diagnose import checks
from dpdeploy.diagnose.checks import arch_check, run_checks
from dpdeploy.host.facts import Gpu
from dpdeploy.plan.resolve import resolve
from dpdeploy.runner import Completed
from dpdeploy.plan.settings import resolve as settings

from .conftest import facts_fixture
from .deployed import stamp


def plan_for(name, matrix, tmp_path, **flags):
    return resolve(facts_fixture(name), matrix, settings({"home": str(tmp_path), **flags}, env={}))


def by_name(results):
    return {c.name: c for c in results}


def test_arch_check_names_the_uncovered_gpu():
    gpus = [Gpu(0, "NVIDIA H100", "9.0", 81559), Gpu(1, "NVIDIA RTX 4090", "8.9", 24564)]
    bad = arch_check(stamp(["sm_90"]), gpus, is_cuda=True)
    assert bad.status == "fail" and "GPU 1 NVIDIA RTX 4090 (sm_89)" in bad.what and "invoke build" in bad.next
    assert arch_check(stamp(["8.9", "9.0+PTX"]), gpus, is_cuda=True).status == "ok"
    assert arch_check(None, gpus, is_cuda=True).status == "skip"
    assert arch_check(stamp(["sm_90"]), [], is_cuda=True).status == "ok"


def test_driver_below_profile_minimum_fails(matrix, tmp_path):
    plan = plan_for("h100", matrix, tmp_path)
    ok = checks.driver_check(facts_fixture("h100"), plan, matrix)
    assert ok.status == "ok" and "580.65.06" in ok.what
    old = checks.driver_check(facts_fixture("h100", driver_version="575.57.08"), plan, matrix)
    assert old.status == "fail" and "575.57.08 < 580.65.06" in old.what and old.next


def test_gcc_default_too_new_is_a_warning_when_the_plan_has_an_older_one(matrix, tmp_path):
    facts = facts_fixture("gcc_alternative")
    plan = resolve(facts, matrix, settings({"home": str(tmp_path)}, env={}))
    result = checks.gcc_check(facts, plan)  # /usr/bin/gcc is 16.1.1, the plan picked gcc-14
    assert result.status == "warn" and "default gcc 16.1.1 is too new" in result.what
    assert "CC=/usr/bin/gcc-14" in result.why
    assert checks.gcc_check(facts_fixture("h100"), plan_for("h100", matrix, tmp_path)).status == "ok"
    bare = facts_fixture("nogpu", compilers=[])
    none = checks.gcc_check(bare, resolve(bare, matrix, settings({"home": str(tmp_path)}, env={})))
    assert none.status == "warn" and "no C/C++ compiler" in none.what and "build-essential" in none.next


def test_memory_check_suggests_max_jobs(matrix, tmp_path):
    plan = plan_for("nogpu", matrix, tmp_path, max_jobs=32)
    result = checks.memory_check(facts_fixture("nogpu"), plan, matrix)
    assert result.status == "fail" and result.next == "invoke build --max-jobs 2"
    assert checks.memory_check(facts_fixture("nogpu"), plan_for("nogpu", matrix, tmp_path), matrix).status == "ok"


def test_disk_check(matrix, tmp_path):
    plan = plan_for("nogpu", matrix, tmp_path)
    small = checks.disk_check(facts_fixture("nogpu", disk_free_mib=3000), plan, matrix)
    assert small.status == "fail" and "3000 MiB" in small.what
    assert checks.disk_check(facts_fixture("nogpu"), plan, matrix).status == "ok"


def fake_env(tmp_path):
    python = tmp_path / "env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n")
    return str(tmp_path / "env")


def test_import_check_missing_env_says_run_invoke_env(tmp_path):
    result = checks.import_check(str(tmp_path / "nowhere"))
    assert result.status == "warn" and "env not created" in result.what and result.next == "invoke env"


def test_import_check_explains_a_known_import_error(tmp_path):
    prefix = fake_env(tmp_path)
    stderr = ("Traceback (most recent call last):\n  File \"<string>\", line 1, in <module>\n"
              "ImportError: /env/lib/python3.11/site-packages/detectron2/_C.cpython-311-x86_64-linux-gnu.so: "
              "undefined symbol: _ZN3c1017RegisterOperatorsD1Ev\n")
    calls = []

    def runner(argv, **kw):
        calls.append(argv)
        return Completed(tuple(argv), 1, "", stderr)

    result = checks.import_check(prefix, runner)
    assert calls[0][0] == f"{prefix}/bin/python" and "import detectron2, densepose" in calls[0][2]
    assert result.status == "fail" and "undefined symbol" in result.what
    assert result.details[0].startswith("c-extension-undefined-symbol:") and "invoke build" in result.next
    ok = checks.import_check(prefix, lambda argv, **kw: Completed(tuple(argv), 0, "0.6\n", ""))
    assert ok.status == "ok" and "0.6" in ok.what


def test_nvcc_check_pypi_toolchain(matrix, tmp_path):
    facts = facts_fixture("nogpu")  # system CUDA without headers: the plan picks PyPI's toolchain
    plan = resolve(facts, matrix, settings({"home": str(tmp_path), "profile": "cu130"}, env={}))
    assert plan.toolchain.cuda_source == "pypi"
    missing = checks.nvcc_check(facts, plan, env={})
    assert missing.status == "warn" and missing.next == "invoke env"
    nvcc = tmp_path / "envs" / "cu130" / "cuda" / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text("")
    out = "nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release {}, V{}\n"

    def answer(release, full):
        return lambda a, **k: Completed(tuple(a), 0, out.format(release, full), "")

    good = checks.nvcc_check(facts, plan, answer("13.0", "13.0.88"), env={})
    assert good.status == "ok" and "13.0.88" in good.what
    bad = checks.nvcc_check(facts, plan, answer("12.4", "12.4.131"), env={})
    assert bad.status == "fail"
    shell = checks.nvcc_check(facts, plan, answer("13.0", "13.0.88"), env={"CUDA_HOME": "/usr/local/cuda-12.4"})
    assert shell.status == "warn" and "CUDA_HOME=/usr/local/cuda-12.4" in shell.details[0]


def test_run_checks_tolerates_a_missing_env(matrix, tmp_path):
    plan = plan_for("h100", matrix, tmp_path)
    results = by_name(run_checks(facts_fixture("h100"), plan, matrix, runner=lambda *a, **k: None, env={}))
    assert list(results) == ["driver", "nvcc", "gcc", "compiled-archs", "densepose-import", "disk", "memory"]
    assert results["densepose-import"].what.startswith("env not created")
    assert not any(c.status == "fail" for c in results.values())
