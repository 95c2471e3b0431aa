"""The real build of detectron2 + DensePose and its verification (needs a local detectron2 source)."""
import json
import os
import subprocess
import sys

import pytest

from dpdeploy.envs.site import torch_info, torchvision_version
from dpdeploy.records import build_stamp, env_stamp, versions
from dpdeploy.records.env_stamp import EnvStamp

from .conftest import ROOT

SOURCE = os.environ.get("DPDEPLOY_TEST_D2_SOURCE", "")

pytestmark = [pytest.mark.slow, pytest.mark.detectron2,
              pytest.mark.skipif(not SOURCE, reason="set DPDEPLOY_TEST_D2_SOURCE to a detectron2 clone or archive")]


def invoke_build(home, prefix, *extra):
    env = {**os.environ, "DPDEPLOY_HOME": str(home), "NO_COLOR": "1"}
    argv = [sys.executable, "-m", "invoke", "build", "--json", "--source", SOURCE, "--profile", "cu130",
            "--arch-list", "9.0", "--prefix", str(prefix), "--max-jobs", "2", *extra]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env, timeout=3600)
    return done.returncode, json.loads(done.stdout)


def test_real_build_then_up_to_date_then_cache_hit(torch_env, tmp_path):
    python = str(torch_env / "bin" / "python")
    # detectron2.layers imports fvcore/iopath at runtime (its setup.py install_requires)
    subprocess.run([python, "-m", "pip", "install", "-q", "fvcore>=0.1.5,<0.1.6", "iopath>=0.1.7,<0.1.10"], check=True)
    torch = torch_info(torch_env)  # the torch_env fixture stands in for the env step (no lock for its pins)
    env_stamp.write(torch_env, EnvStamp("pip", "tests/conftest.py torch_env", "", "cu130", torch.python, "", torch.torch,
                                        torchvision_version(torch_env), torch.torch_cuda))
    build_stamp.path(torch_env).unlink(missing_ok=True)

    code, first = invoke_build(tmp_path, torch_env)
    assert code == 0, first["output"]
    assert first["status"] == "done" and first["detail"]["cache"] == "miss"
    assert "sm_90" in first["detail"]["compiled_archs"] and not first["detail"]["unpinned"]
    stamp = build_stamp.read(torch_env)   # what the step wrote, as doctor, verify and the report read it
    assert stamp.compiled_archs == first["detail"]["compiled_archs"] and stamp.force_cuda
    assert {v.name: v.value for v in versions.collect(torch_env)}["compiled archs"] == stamp.archs_text()

    code, again = invoke_build(tmp_path, torch_env)
    assert code == 0 and again["status"] == "up-to-date"

    build_stamp.path(torch_env).unlink()
    code, hit = invoke_build(tmp_path, torch_env)
    assert code == 0 and hit["detail"]["cache"] == "hit"
    assert hit["detail"]["compiled_archs"] == first["detail"]["compiled_archs"]
