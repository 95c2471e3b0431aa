"""The real thing: `invoke env` installs the cu130 lock (pip --require-hashes) into a temp prefix."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT


@pytest.fixture
def scratch(tmp_path):
    """The env is ~6 GB: remove it afterwards (pytest keeps its last tmp dirs)."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.slow
def test_cu130_lock_installs_and_second_run_is_a_noop(scratch):
    tmp_path = scratch
    env = {**os.environ, "NO_COLOR": "1", "DPDEPLOY_HOME": str(tmp_path / "home")}
    prefix = tmp_path / "env"

    def invoke(*args):
        proc = subprocess.run([sys.executable, "-m", "invoke", "env", "--json", "--profile", "cu130",
                               "--prefix", str(prefix), *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=1800)
        return proc, (json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {})

    first, result = invoke()
    if first.returncode == 2 and "resolved for Python" in first.stdout:
        pytest.skip("no Python matching the lock's on this host: " + result.get("output", "").splitlines()[0])
    assert first.returncode == 0 and result["status"] == "done", first.stdout[-3000:] + first.stderr[-3000:]
    imported = subprocess.run([str(prefix / "bin/python"), "-c",
                               "import torch, torchvision; print(torch.__version__, torchvision.__version__)"],
                              capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith("2.14.1")
    second, again = invoke()
    assert second.returncode == 0 and again["status"] == "up-to-date", second.stdout
    print(f"env: first {result['duration_s']:.1f}s, no-op {again['duration_s']:.2f}s")
