"""dpdeploy's own extension (dpdeploy/build/testext_src) built by the build step's code: proves the toolchain in CI.

FORCE_CUDA with one arch and PyPI's CUDA toolchain, no GPU needed; the compiled archs are
read back from the binary with dpdeploy.build.fatbin.
"""
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from dpdeploy import paths
from dpdeploy.build import wheels as builder, cache as wheelcache
from dpdeploy.build.fatbin import Arch, compiled_archs
from dpdeploy.plan.resolve import resolve
from dpdeploy.plan.settings import resolve as settings
from dpdeploy.steps import build

from .conftest import facts_fixture

EXT = paths.TESTEXT_SOURCE
PARTS = (builder.Project("dpdeploy-testext", ""),)
CHECK = ("import json, torch, dpdeploy_testext._C as c; "
         "print(json.dumps({'file': c.__file__, 'out': c.add_one(torch.zeros(3)).tolist(), "
         "'cuda_op': hasattr(c, 'add_one_cuda')}))")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not shutil.which("g++"), reason="needs gcc/g++ (apt install g++)")]


def plan_for(matrix, env, home, **values):
    s = settings({"home": str(home), "prefix": str(env), "max_jobs": 2, **values}, env={})
    plan = resolve(facts_fixture("nogpu"), matrix, s)  # recorded host: system CUDA without headers -> PyPI's
    return replace(plan, toolchain=replace(plan.toolchain, cc=shutil.which("gcc"), cxx=shutil.which("g++")))


def build_and_load(plan, env, home):
    log = Path(home) / "logs" / "testext.log"
    fields = build.key_fields("testext", build.env_info(env), plan, "x86_64")
    key = wheelcache.cache_key(fields)
    wheels = wheelcache.store(Path(home) / "wheels", key, fields,
                              lambda out: build.compile_wheels(plan, EXT, PARTS, out, log, print))
    builder.install_wheels(wheels, str(env / "bin" / "python"), log)
    done = subprocess.run([str(env / "bin" / "python"), "-c", CHECK], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr
    return key, wheels, json.loads(done.stdout)


def test_cuda_build_with_pypi_toolchain(matrix, torch_env, tmp_path):
    plan = plan_for(matrix, torch_env, tmp_path, profile="cu130", arch_list="7.5")
    assert plan.toolchain.cuda_source == "pypi" and plan.force_cuda
    key, wheels, loaded = build_and_load(plan, torch_env, tmp_path)
    assert loaded["out"] == [1.0, 1.0, 1.0] and loaded["cuda_op"]
    assert compiled_archs(loaded["file"]) == {Arch("sm", 75)}
    assert (Path(plan.toolchain.cuda_home) / "lib64" / "libcudart.so").exists()
    assert wheelcache.lookup(tmp_path / "wheels", key) == wheels, "second lookup is a cache hit"
    assert not (EXT / "build").exists(), "the source tree stays pristine"


def test_cpu_build_has_no_cuda_code(matrix, torch_env, tmp_path):
    plan = plan_for(matrix, torch_env, tmp_path, profile="cpu")
    _, _, loaded = build_and_load(plan, torch_env, tmp_path)
    assert loaded["out"] == [1.0, 1.0, 1.0] and not loaded["cuda_op"]
    assert compiled_archs(loaded["file"]) == set()


def test_failed_build_raises_with_its_log(torch_env, tmp_path):
    tree = tmp_path / "broken"
    tree.mkdir()
    (tree / "setup.py").write_text("raise SystemExit('error: dpdeploy-test-boom')\n")
    with pytest.raises(builder.BuildError, match="pip wheel for broken failed") as err:
        builder.build_wheels(tree, [builder.Project("broken", "")], str(torch_env / "bin" / "python"), {"PATH": "/usr/bin:/bin"},
                             tmp_path / "out", tmp_path / "b.log")
    assert "dpdeploy-test-boom" in err.value.log.read_text()
