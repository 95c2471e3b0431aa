"""Locks: the committed files agree with the matrix, rendering, uv/conda-lock commands, fail-fast errors."""
import copy

import pytest
import yaml

from dpdeploy.envs import conda as condaenv, locking as lockall, lockfile as locks
from dpdeploy.plan import matrix as matrix_mod
from dpdeploy.host.network import reachable
from dpdeploy.runner import Completed

from .conftest import ROOT

PYPI_PROFILES = ("cu130", "cpu", "cpu-ray", "cu130-ray")
HOST_PROFILE = "host"   # the runtime and build pins over a host's own torch (pip only)
UNREACHABLE = lambda url: f"{url} is unreachable (test)"  # noqa: E731
REACHABLE = lambda url: None  # noqa: E731


@pytest.mark.parametrize("name", PYPI_PROFILES + (HOST_PROFILE,))
def test_committed_lock_agrees_with_matrix(matrix, name):
    profile = matrix.profile(name)
    lock = locks.load(profile)
    assert locks.drift(matrix, profile, lock) == []
    assert (ROOT / locks.input_path(name)).read_text() == locks.render_input(matrix, profile)
    assert lock.python == locks.DEFAULT_PYTHON
    text = (ROOT / lock.path).read_text()
    assert f"invoke lock --profile {name}" in text.splitlines()[1]
    # every package is hash-pinned, and nothing is left unpinned
    assert text.count("==") == len(lock.pins) and "--hash=sha256:" in text


def test_host_lock_leaves_torch_to_the_host(matrix):
    """The host lock installs what DensePose needs beyond the host's torch, never a torch of its own."""
    lock = locks.load(matrix.profile(HOST_PROFILE))
    assert not {"torch", "torchvision"} & set(lock.pins)
    assert not any(name.startswith("nvidia-") for name in lock.pins)
    assert {"numpy", "fvcore", "ninja"} <= set(lock.pins)
    assert not (ROOT / condaenv.environment_path(HOST_PROFILE)).exists()
    with pytest.raises(locks.LockError, match="host profile"):
        lockall.lock_conda(matrix, HOST_PROFILE, "3.11", dry=True)


@pytest.mark.parametrize("name", PYPI_PROFILES)
def test_environment_yml_pins_equal_the_pip_lock(matrix, name):
    profile = matrix.profile(name)
    lock = locks.load(profile)
    text = (ROOT / condaenv.environment_path(name)).read_text()
    assert text == condaenv.render_environment(matrix, profile, lock.python)
    doc = yaml.safe_load(text)
    pip = next(d["pip"] for d in doc["dependencies"] if isinstance(d, dict))
    pinned = dict(line.split("==") for line in pip if "==" in line)
    assert pinned and all(lock.pins[locks.normalize(n.split("[")[0])] == (locks.Pin(v),) for n, v in pinned.items())
    assert f"python={lock.python}" in doc["dependencies"]
    assert (ROOT / condaenv.VIRTUAL_PACKAGES).read_text() == condaenv.render_virtual_packages(matrix)


def test_drift_is_caught(matrix):
    raw = copy.deepcopy(dict(matrix.raw))
    raw["runtime"] = {**raw["runtime"], "numpy": "2.3.0"}
    drifted = matrix_mod.parse(raw)
    profile = drifted.profile("cu130")
    assert locks.drift(drifted, profile, locks.load(profile)) == [
        "numpy: matrix 2.3.0, env/locks/cu130.txt 2.2.6"]
    env_pip = condaenv.environment(drifted, profile, "3.11")["dependencies"][-1]["pip"]
    assert "numpy==2.3.0" in env_pip  # the committed environment yml then differs: the test above fails


def test_render_input_per_profile(matrix):
    cu130 = locks.render_input(matrix, matrix.profile("cu130"))
    cpu = locks.render_input(matrix, matrix.profile("cpu"))
    assert "torch==2.14.1\n" in cu130 and "nvidia-cuda-nvcc==13.0.88\n" in cu130
    assert "nvidia-cuda-cccl==13.0.85\n" in cu130 and "nvidia-cuda-nvcc" not in cpu
    assert "numpy==2.2.6\n" in cpu and "setuptools==81.0.0\n" in cpu
    assert locks.pins(matrix, matrix.profile("cpu-slim"))["torch"] == "2.14.1+cpu"


def test_matrix_rejects_a_loose_runtime_pin(matrix):
    raw = copy.deepcopy(dict(matrix.raw))
    raw["runtime"] = {**raw["runtime"], "numpy": ">=2"}
    with pytest.raises(matrix_mod.MatrixError, match="runtime.numpy"):
        matrix_mod.parse(raw)


def test_compile_command(matrix):
    assert locks.compile_argv(matrix.profile("cu130"), "3.11") == [
        "uv", "pip", "compile", "--no-config", "--quiet", "--generate-hashes", "--python-version", "3.11",
        "--python-platform", "x86_64-manylinux_2_28",
        "--custom-compile-command", "invoke lock --profile cu130 --python-version 3.11", "env/locks/cu130.in"]
    cu126 = locks.compile_argv(matrix.profile("cu126"), "3.12")
    assert cu126[-6:] == ["--extra-index-url", "https://download.pytorch.org/whl/cu126",
                          "--index-strategy", "unsafe-best-match", "--emit-index-url", "env/locks/cu126.in"]


def test_lock_profile_writes_what_uv_printed(matrix, tmp_path):
    calls = []
    lock_text = ("# header\n#    invoke lock --profile cpu --python-version 3.11\n"
                 "numpy==2.2.6 \\\n    --hash=sha256:ab\n")

    def runner(argv, **kw):
        calls.append((argv, kw))
        assert (tmp_path / "env/locks/cpu.in").read_text() == locks.render_input(matrix, matrix.profile("cpu"))
        return Completed(tuple(argv), 0, lock_text, "Resolved 1 package")

    result = locks.lock_profile(matrix, matrix.profile("cpu"), "3.11", runner=runner, root=tmp_path, uv="uv")
    assert calls[0][0] == locks.compile_argv(matrix.profile("cpu"), "3.11") and calls[0][1]["cwd"] == str(tmp_path)
    assert (tmp_path / "env/locks/cpu.txt").read_text() == lock_text
    assert (result.status, result.packages) == ("locked", 1)


def test_uv_failure_is_a_clear_error(matrix, tmp_path):
    runner = lambda argv, **kw: Completed(tuple(argv), 1, "", "No solution found: numpy==9 does not exist")  # noqa: E731
    with pytest.raises(locks.LockError, match="uv could not resolve") as err:
        locks.lock_profile(matrix, matrix.profile("cpu"), "3.11", runner=runner, root=tmp_path, uv="uv")
    assert "numpy==9" in str(err.value) and not (tmp_path / "env/locks/cpu.txt").exists()


def test_pytorch_index_profile_fails_fast_when_unreachable(matrix, tmp_path):
    runner = lambda *a, **k: pytest.fail("uv must not run")  # noqa: E731
    with pytest.raises(locks.LockError) as err:
        lockall.lock_pip(matrix, "cu126", "3.11", runner=runner, reach=UNREACHABLE, root=tmp_path)
    text = str(err.value)
    assert "cannot lock profile cu126" in text and "unreachable" in text
    assert "run `invoke lock --profile cu126` on a host that reaches download.pytorch.org" in text


def test_lock_all_skips_unreachable_indexes(matrix, tmp_path):
    ran = []
    runner = lambda argv, **kw: ran.append(argv[-1]) or Completed(tuple(argv), 0, "x==1 \\\n", "")  # noqa: E731
    results = lockall.lock_pip(matrix, "", "3.11", runner=runner, reach=UNREACHABLE, root=tmp_path)
    assert {r.profile: r.status for r in results} == {"cu130": "locked", "cu126": "skipped", "cpu": "locked",
                                                     "cpu-slim": "skipped", "cpu-ray": "locked", "cu130-ray": "locked",
                                                     "host": "locked"}
    assert ran == ["env/locks/cu130.in", "env/locks/cpu.in", "env/locks/cpu-ray.in", "env/locks/cu130-ray.in",
                   "env/locks/host.in"]
    assert (tmp_path / "env/environment-cu126.yml").exists() and (tmp_path / "env/virtual-packages.yml").exists()


def test_missing_lock_says_where_to_make_it(matrix, tmp_path):
    with pytest.raises(locks.LockError) as err:
        locks.load(matrix.profile("cu126"), root=tmp_path)
    assert "no lock for profile cu126" in str(err.value) and "download.pytorch.org" in str(err.value)


# --- conda (conda channels are unreachable here: no real conda-lock run was possible) ---------

def test_conda_commands(matrix):
    assert condaenv.lock_argv(matrix, "cu130") == [
        "conda-lock", "lock", "--file", "env/environment-cu130.yml", "--virtual-package-spec",
        "env/virtual-packages.yml", "--platform", "linux-64", "--lockfile", "env/conda-lock-cu130.yml"]
    assert condaenv.install_argv("cu130", "/opt/dp") == [
        "conda-lock", "install", "--prefix", "/opt/dp", "env/conda-lock-cu130.yml"]
    env = condaenv.environment(matrix, matrix.profile("cu130"), "3.11")
    assert {"cuda-nvcc=13.0", "gxx_linux-64=15", "python=3.11"} <= set(env["dependencies"][:-1])
    assert not any(p.startswith("nvidia-cuda-nvcc") for p in env["dependencies"][-1]["pip"])
    spec = yaml.safe_load(condaenv.render_virtual_packages(matrix))
    assert spec["subdirs"]["linux-64"]["packages"]["__cuda"] == "13.0"


def test_conda_lock_missing_tool_says_how_to_install(matrix, tmp_path):
    with pytest.raises(locks.LockError) as err:
        lockall.lock_conda(matrix, "cu130", "3.11", which=lambda name: None, reach=REACHABLE, root=tmp_path)
    assert "conda-lock is not installed" in str(err.value) and "pipx install conda-lock" in str(err.value)


def test_conda_lock_unreachable_channel_fails_before_running(matrix, tmp_path):
    runner = lambda *a, **k: pytest.fail("conda-lock must not run")  # noqa: E731
    seen = []
    reach = lambda url: seen.append(url) or f"{url} is unreachable ([Errno -2] Name or service not known)"  # noqa: E731
    with pytest.raises(locks.LockError) as err:
        lockall.lock_conda(matrix, "cu130", "3.11", runner=runner, which=lambda n: "/usr/bin/conda-lock",
                           reach=reach, root=tmp_path)
    assert seen == ["https://conda.anaconda.org/conda-forge/noarch/repodata.json"]
    assert "conda channel conda-forge is unreachable" in str(err.value) and "Name or service" in str(err.value)
    assert not (tmp_path / "env/conda-lock-cu130.yml").exists()


def test_no_fabricated_conda_lock_is_committed():
    assert not list((ROOT / "env").glob("conda-lock*.yml"))


def test_reachable_reports_a_refused_connection():
    assert "unreachable" in reachable("http://127.0.0.1:9/", timeout=2)


def test_ray_is_only_in_the_profiles_that_ask_for_it(matrix):
    """Ray comes through the matrix's `extras.ray` group into cpu-ray's and cu130-ray's locks; plain cpu
    and cu130 stay lean, and the plan never picks a Ray profile by itself."""
    for name, lean in (("cpu-ray", "cpu"), ("cu130-ray", "cu130")):
        ray_in = locks.render_input(matrix, matrix.profile(name))
        assert "ray[data,serve]==2.58.0" in ray_in.splitlines()
        assert not any(line.startswith("ray") for line in locks.render_input(matrix, matrix.profile(lean)).splitlines())
        assert sorted(set(ray_in.splitlines()[2:]) - set(locks.render_input(matrix, matrix.profile(lean)).splitlines())) \
            == ["ray[data,serve]==2.58.0"], f"{name} is {lean} plus Ray, nothing else"
        lock = locks.load(matrix.profile(name))
        assert locks.drift(matrix, matrix.profile(name), lock) == []
        assert {p.version for p in lock.pins["ray"]} == {"2.58.0"} and "pyarrow" in lock.pins and "fastapi" in lock.pins
        assert "ray" not in locks.load(matrix.profile(lean)).pins
    gpu = matrix.profile("cu130-ray")
    assert (gpu.cuda, gpu.arch_list, gpu.min_driver) == (matrix.profile("cu130").cuda, matrix.profile("cu130").arch_list,
                                                         matrix.profile("cu130").min_driver)
    assert {p.version for p in locks.load(gpu).pins["nvidia-cuda-nvcc"]} == {"13.0.88"}
    assert not {"cpu-ray", "cu130-ray"} & {*matrix.auto_gpu, matrix.auto_no_gpu}


def test_unknown_extras_group_is_refused(matrix):
    raw = copy.deepcopy(dict(matrix.raw))
    raw["profiles"]["cpu-ray"]["extras"] = ["rayy"]
    with pytest.raises(matrix_mod.MatrixError, match="names unknown extras rayy"):
        matrix_mod.parse(raw, "m.yml")
