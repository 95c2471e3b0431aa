"""`invoke predict` stopped by Ctrl-C or SIGTERM: one line, exit 130 / 143, and the in-env worker
(its own process group) ended with it, never left running. Real processes, the session's
DensePose env (``d2_env``), synthetic weights."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow


def workers(out: Path) -> list[int]:
    """Worker processes writing into ``out``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "dpdeploy.inenv.predict_worker" in cmd and str(out) in cmd:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_predict_interrupted_ends_its_worker(d2_env, tmp_path, sig):
    photos = tmp_path / "photos"
    photos.mkdir()
    data = subprocess.run([str(d2_env / "bin" / "python"), "-c", "import matplotlib; print(matplotlib.get_data_path())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    sample = Path(data) / "sample_data" / "grace_hopper.jpg"
    for n in range(4):
        shutil.copy(sample, photos / f"p{n}.jpg")
    out = tmp_path / "out"
    env = {**os.environ, "NO_COLOR": "1", "DPDEPLOY_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "predict", str(photos), "--out", str(out), "--weights",
                             "synthetic", "--prefix", str(d2_env), "--device", "cpu"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not workers(out):
        assert proc.poll() is None and time.monotonic() < deadline, "the worker never started"
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (130 if sig == signal.SIGINT else 128 + signal.SIGTERM), err[-2000:]
    assert "interrupted by SIG" in err and "Traceback" not in err
    assert workers(out) == []
