"""The plan, table-driven over recorded facts."""
import pytest

from dpdeploy.plan.resolve import PlanError, arch_list_for, max_jobs_for, resolve
from dpdeploy.plan.settings import resolve as settings

from .conftest import facts_fixture


@pytest.mark.parametrize("fixture, profile, arch_list", [
    ("h100", "cu130", "9.0+PTX"),
    ("a100", "cu130", "8.0+PTX"),          # two identical GPUs: deduplicated
    ("rtx4090", "cu130", "8.9+PTX"),
    ("rtx5090", "cu130", "12.0+PTX"),
    ("t4", "cu130", "7.5+PTX"),
    ("v100", "cu126", "7.0+PTX"),          # CUDA 13 dropped Volta
    ("mixed", "cu130", "7.5;8.0+PTX"),
    ("driver535", "cu126", "9.0+PTX"),     # too old for CUDA 13.0
    ("driver580", "cu130", "8.0+PTX"),
    ("gcc_alternative", "cu130", "9.0+PTX"),
    ("nogpu", "cpu", ""),
])
def test_profile_and_arch_list(matrix, fixture, profile, arch_list):
    plan = resolve(facts_fixture(fixture), matrix, settings({}, env={}))
    assert plan.profile == profile
    assert plan.torch_cuda_arch_list == arch_list
    assert plan.force_cuda == (profile != "cpu")
    assert [s.name for s in plan.steps] == ["env", "build", "weights", "smoke", "report"]


def test_rejected_profiles_say_why(matrix):
    plan = resolve(facts_fixture("v100"), matrix, settings({}, env={}))
    assert "sm_70" in plan.rejected["cu130"] and "7.5-12.1" in plan.rejected["cu130"]
    plan = resolve(facts_fixture("driver535"), matrix, settings({}, env={}))
    assert "535.183.01 is older than 580.65.06" in plan.rejected["cu130"]


def test_no_gpu_is_an_explicit_cpu_plan(matrix):
    plan = resolve(facts_fixture("nogpu"), matrix, settings({}, env={}))
    assert plan.device == "cpu" and plan.toolchain.cuda_home is None
    assert any("no NVIDIA GPU found" in r for r in plan.reasons)
    assert plan.rejected == {"cu130": "no NVIDIA GPU on this host", "cu126": "no NVIDIA GPU on this host"}


@pytest.mark.parametrize("fixture, needles", [
    ("driver470", ["driver >= 580.65.06", "driver >= 525.60.13", "--profile cpu"]),
    ("gcc_too_new", ["gcc-15", "gcc-13"]),
    ("old_python", ["Python 3.14"]),
])
def test_refusals_name_the_next_step(matrix, fixture, needles):
    with pytest.raises(PlanError) as err:
        resolve(facts_fixture(fixture), matrix, settings({}, env={}))
    text = str(err.value)
    assert text.startswith("no profile fits this host")
    for needle in needles:
        assert needle in text


def test_small_disk_is_a_warning_not_a_rejection(matrix):
    """Only creating the env needs the space (the env step refuses then); an env already made runs."""
    plan = resolve(facts_fixture("small_disk"), matrix, settings({}, env={}))
    assert plan.profile == "cu130" and not plan.rejected
    [warning] = [w for w in plan.warnings if "GiB free" in w]
    assert "5.9 GiB free at /home/ml" in warning and "~15.6 GiB" in warning and "env step refuses" in warning
    roomy = resolve(facts_fixture("small_disk", disk_free_mib=16000), matrix, settings({}, env={}))
    assert not any("GiB free" in w for w in roomy.warnings)


def test_rtx5090_with_old_driver_is_refused(matrix):
    with pytest.raises(PlanError) as err:
        resolve(facts_fixture("rtx5090", driver_version="550.54.14"), matrix, settings({}, env={}))
    assert "sm_120" in err.value.rejected["cu126"]
    assert "580.65.06" in err.value.rejected["cu130"]


def test_unsupported_cpu_arch(matrix):
    with pytest.raises(PlanError, match="unsupported CPU architecture: aarch64"):
        resolve(facts_fixture("aarch64"), matrix, settings({}, env={}))


def test_untested_os_is_a_warning(matrix):
    plan = resolve(facts_fixture("gcc_alternative", os_id="fedora", os_name="Fedora Linux 44", os_version="44"),
                   matrix, settings({}, env={}))
    assert any("Fedora Linux 44 is not among the tested systems" in w for w in plan.warnings)


def test_forced_profile_the_gpus_cannot_run_is_refused(matrix):
    with pytest.raises(PlanError) as err:
        resolve(facts_fixture("v100"), matrix, settings({"profile": "cu130"}, env={}))
    assert "sm_70" in str(err.value) and "--profile cpu" not in str(err.value)


def test_forced_cuda_profile_without_gpu_builds_the_full_list(matrix):
    plan = resolve(facts_fixture("nogpu"), matrix, settings({"profile": "cu130"}, env={}))
    assert plan.torch_cuda_arch_list == matrix.profile("cu130").arch_list
    assert plan.device == "cpu" and plan.force_cuda
    # system CUDA 13.0 lacks cusparse.h: the PyPI toolchain in the env is used instead
    assert plan.toolchain.cuda_source == "pypi" and plan.toolchain.cuda_home.endswith("/envs/cu130/cuda")
    assert any("lacks library headers" in r for r in plan.reasons)


def test_system_cuda_used_only_when_it_matches_torch(matrix):
    h100 = resolve(facts_fixture("h100"), matrix, settings({}, env={}))
    assert h100.toolchain.cuda_source == "system" and h100.toolchain.cuda_home == "/usr/local/cuda-13.0"
    a100 = resolve(facts_fixture("a100"), matrix, settings({}, env={}))  # system 12.4 vs torch 13.0
    assert a100.toolchain.cuda_source == "pypi"
    assert any("differs from torch's CUDA 13.0" in r for r in a100.reasons)


def test_arch_list_override(matrix):
    plan = resolve(facts_fixture("nogpu"), matrix, settings({"profile": "cu130", "arch_list": "9.0 8.0+PTX"}, env={}))
    assert plan.torch_cuda_arch_list == "9.0;8.0+PTX"
    with pytest.raises(PlanError, match="7.0 outside 7.5-12.1"):
        resolve(facts_fixture("nogpu"), matrix, settings({"profile": "cu130", "arch_list": "7.0"}, env={}))
    with pytest.raises(PlanError, match="not an arch"):
        resolve(facts_fixture("nogpu"), matrix, settings({"profile": "cu130", "arch_list": "sm_90"}, env={}))


def test_gcc_choice_respects_nvcc_maximum(matrix):
    plan = resolve(facts_fixture("gcc_alternative"), matrix, settings({}, env={}))
    assert plan.toolchain.cc == "/usr/bin/gcc-14" and plan.toolchain.cxx == "/usr/bin/g++-14"
    assert plan.toolchain.max_gcc == 15


def test_prefix_and_home(matrix, tmp_path):
    plan = resolve(facts_fixture("h100"), matrix, settings({"home": str(tmp_path)}, env={}))
    assert plan.prefix == str(tmp_path / "envs" / "cu130")
    plan = resolve(facts_fixture("h100"), matrix, settings({"prefix": "/opt/dp"}, env={}))
    assert plan.prefix == "/opt/dp"


def test_same_inputs_same_plan(matrix):
    s = settings({}, env={})
    assert resolve(facts_fixture("mixed"), matrix, s) == resolve(facts_fixture("mixed"), matrix, s)


def test_arch_list_for():
    assert arch_list_for(["9.0", "8.0", "9.0", "12.0", "8.6"]) == "8.0;8.6;9.0;12.0+PTX"
    assert arch_list_for([]) == ""


@pytest.mark.parametrize("cores, mem_mib, jobs", [
    (2, 24105, 2),      # this machine
    (16, 16384, 11),    # RAM-bound: (16384 - 2048) / 1280
    (64, 262144, 64),   # core-bound
    (8, 2048, 1),       # never below one
])
def test_max_jobs(matrix, cores, mem_mib, jobs):
    got, why = max_jobs_for(facts_fixture("h100", cpu_count=cores, mem_total_mib=mem_mib), matrix)
    assert got == jobs and f"MAX_JOBS={jobs}" in why


@pytest.mark.parametrize("fixture, profile, min_driver", [
    ("h100", "cu130", "580.65.06"),        # what Ansible's nvidia_driver role installs/verifies
    ("driver535", "cu126", "525.60.13"),
    ("nogpu", "cpu", None),                # CPU profiles need no driver
])
def test_plan_carries_the_profiles_min_driver(matrix, fixture, profile, min_driver):
    plan = resolve(facts_fixture(fixture), matrix, settings({}, env={}))
    assert plan.profile == profile
    assert plan.min_driver == min_driver == matrix.profile(profile).min_driver
    assert plan.to_dict()["min_driver"] == min_driver


@pytest.mark.parametrize("profile", ["auto", "cu130"])
def test_a_host_without_compiler_plans_but_cannot_build(matrix, profile):
    """A runtime image: no gcc at all. predict/smoke/verify need the plan; only the build refuses."""
    plan = resolve(facts_fixture("nogpu", compilers=[]), matrix, settings({"profile": profile}, env={}))
    assert plan.profile == ("cpu" if profile == "auto" else "cu130")
    assert plan.toolchain.cc == "" and plan.toolchain.cxx == ""
    assert any("no C/C++ compiler" in w and "build-essential" in w for w in plan.warnings)
    with_gcc = resolve(facts_fixture("nogpu"), matrix, settings({"profile": profile}, env={}))
    assert with_gcc.toolchain.cc and not any("compiler" in w for w in with_gcc.warnings)
