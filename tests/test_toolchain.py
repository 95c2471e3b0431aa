"""CUDA_HOME assembly from the PyPI wheels' layout and the compile environment."""
import os
from dataclasses import replace

import pytest

from dpdeploy.envs.site import EnvError

from dpdeploy.build import toolchain
from dpdeploy.plan.resolve import resolve
from dpdeploy.plan.settings import resolve as settings

from .conftest import facts_fixture


def plan_for(matrix, tmp_path, **values):
    return resolve(facts_fixture("nogpu"), matrix,
                   settings({"home": str(tmp_path / "home"), "prefix": str(tmp_path / "env"), **values}, env={}))


def test_cuda_profile_env(matrix, tmp_path):
    plan = plan_for(matrix, tmp_path, profile="cu130", arch_list="9.0", max_jobs=3)
    assert plan.toolchain.cuda_source == "pypi"
    env = toolchain.compile_env(plan, {"PATH": "/usr/local/bin:/usr/bin", "CUDA_PATH": "/usr/local/cuda",
                                       "TORCH_CUDA_ARCH_LIST": "5.0", "HOME": "/root"})
    assert env["FORCE_CUDA"] == "1" and env["TORCH_CUDA_ARCH_LIST"] == "9.0"
    assert env["CUDA_HOME"] == str(tmp_path / "env" / "cuda") and "CUDA_PATH" not in env
    assert env["PATH"].split(":")[:2] == [str(tmp_path / "env" / "cuda" / "bin"), str(tmp_path / "env" / "bin")]
    assert env["MAX_JOBS"] == "3" and env["CC"] == "/usr/bin/gcc" and env["CXX"] == "/usr/bin/g++"
    assert env["HOME"] == "/root"


def test_full_profile_list_when_no_gpu(matrix, tmp_path):
    plan = plan_for(matrix, tmp_path, profile="cu130")
    assert toolchain.compile_env(plan, {})["TORCH_CUDA_ARCH_LIST"] == "7.5;8.0;8.6;9.0;10.0;12.0+PTX"


@pytest.mark.parametrize("empty", ["", "  "])
def test_empty_arch_list_with_force_cuda_is_refused(matrix, tmp_path, empty):
    plan = replace(plan_for(matrix, tmp_path, profile="cu130"), torch_cuda_arch_list=empty)
    with pytest.raises(toolchain.ToolchainError, match="empty TORCH_CUDA_ARCH_LIST.*--arch-list"):
        toolchain.compile_env(plan, {})


def test_cpu_profile_builds_no_cuda(matrix, tmp_path):
    plan = plan_for(matrix, tmp_path)
    env = toolchain.compile_env(plan, {"PATH": "/usr/bin", "CUDA_HOME": "/usr/local/cuda", "FORCE_CUDA": "1",
                                       "TORCH_CUDA_ARCH_LIST": "9.0"})
    assert env["FORCE_CUDA"] == "0" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert "CUDA_HOME" not in env and "TORCH_CUDA_ARCH_LIST" not in env


def test_ccache_wrappers(tmp_path):
    cc, cxx = toolchain.ccache_wrappers("/usr/bin/ccache", "/usr/bin/gcc-12", "/usr/bin/g++-12", tmp_path)
    assert open(cc).read() == '#!/bin/sh\nexec /usr/bin/ccache /usr/bin/gcc-12 "$@"\n'
    assert os.access(cxx, os.X_OK) and "g++-12" in open(cxx).read()


def _wheel_layout(prefix):
    """The directory layout the nvidia cu13 toolchain wheels install (see toolchain.CU13)."""
    cu13 = prefix / "lib" / "python3.11" / "site-packages" / "nvidia" / "cu13"
    for rel in ("bin/nvcc", "include/cuda_runtime.h", "lib/libcudart.so.13", "nvvm/bin/cicc"):
        (cu13 / rel).parent.mkdir(parents=True, exist_ok=True)
        (cu13 / rel).write_text(rel)
    return cu13


def test_assemble_cuda_home(tmp_path):
    cu13 = _wheel_layout(tmp_path / "env")
    home = toolchain.assemble_cuda_home(tmp_path / "env", tmp_path / "env" / "cuda")
    assert (home / "bin" / "nvcc").read_text() == "bin/nvcc"
    assert os.readlink(home / "lib64" / "libcudart.so") == str(cu13 / "lib" / "libcudart.so.13")
    assert (home / "lib64" / "libcudart.so").read_text() == "lib/libcudart.so.13"
    inode = (home / "bin").lstat().st_ino
    toolchain.assemble_cuda_home(tmp_path / "env", home)
    assert (home / "bin").lstat().st_ino == inode, "idempotent: an assembled CUDA_HOME is left alone"
    assert sorted(p.name for p in (tmp_path / "env").iterdir()) == ["cuda", "lib"]


def test_assemble_cuda_home_without_wheels(tmp_path):
    (tmp_path / "env" / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    with pytest.raises(toolchain.ToolchainError, match="toolchain wheels are missing.*invoke env"):
        toolchain.assemble_cuda_home(tmp_path / "env", tmp_path / "env" / "cuda")
    with pytest.raises(EnvError, match="no site-packages"):
        toolchain.assemble_cuda_home(tmp_path / "nothing", tmp_path / "cuda")


def test_no_compiler_is_refused_before_anything_runs(matrix, tmp_path):
    plan = plan_for(matrix, tmp_path)
    plan = replace(plan, toolchain=replace(plan.toolchain, cc="", cxx=""))
    with pytest.raises(toolchain.ToolchainError, match="no C/C\\+\\+ compiler.*build-essential"):
        toolchain.compile_env(plan, {})
