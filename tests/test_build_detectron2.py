"""The real build of detectron2 + DensePose and its verification (needs a local detectron2 source)."""
import json
import os
import subprocess
import sys

import pytest

from dpdeploy.steps import build

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
    (torch_env / build.ENV_STAMP).write_text(json.dumps({"profile": "cu130", "made_by": "tests/conftest.py torch_env"}))
    (torch_env / build.BUILD_STAMP).unlink(missing_ok=True)

    code, first = invoke_build(tmp_path, torch_env)
    assert code == 0, first["output"]
    assert first["status"] == "done" and first["detail"]["cache"] == "miss"
    assert "sm_90" in first["detail"]["archs"] and not first["detail"]["unpinned"]

    code, again = invoke_build(tmp_path, torch_env)
    assert code == 0 and again["status"] == "up-to-date"

    (torch_env / build.BUILD_STAMP).unlink()
    code, hit = invoke_build(tmp_path, torch_env)
    assert code == 0 and hit["detail"]["cache"] == "hit" and hit["detail"]["archs"] == first["detail"]["archs"]
