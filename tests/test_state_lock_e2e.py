"""Real `invoke setup`, `invoke build` and `invoke env` processes sharing one state root: the
second setup waits for the first (exactly one build runs, the env stays intact); SIGTERM and
kill -9 mid-build and mid-env leave no process and, after the next run, no debris.

The state root is fresh; its source and wheel caches are seeded from the session's deployment
so the first setup's build is a cache install, not a second compile (the mid-build cases below
drop the cache entry and compile for real)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dpdeploy.records import build_stamp, lock_holder
from dpdeploy.records.run import read_result, read_steps
from dpdeploy.state import debris, orphans

from .conftest import D2_SOURCE, ROOT

pytestmark = pytest.mark.slow


def start(home: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "NO_COLOR": "1", "DPDEPLOY_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 1200) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def wait_for(predicate, what: str, timeout: float = 600):
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.2)


def holder_of(home: Path, proc: subprocess.Popen):
    held = lock_holder.read(home)
    return held if held and held.pid == proc.pid else None


def running(token: str, program: str) -> list[int]:
    """The token's processes whose command line mentions ``program``."""
    out = []
    for pid in orphans.carrying(token):
        try:
            if program in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                out.append(pid)
        except OSError:
            continue
    return out


def last_run(home: Path, kind: str) -> Path:
    return sorted((home / "runs").glob(f"*-{kind}*"))[-1]


@pytest.fixture()
def home(deployment, tmp_path) -> Path:
    home = tmp_path / "home"
    for part in ("cache/src", "cache/wheels"):
        shutil.copytree(deployment.home / part, home / part, symlinks=True)
    return home


def test_two_setups_then_sigterm_and_kill_9_mid_build_and_mid_env(home):
    setup = ("setup", "--only", "env,build", "--profile", "cpu", "--source", D2_SOURCE)
    first = start(home, *setup)
    wait_for(lambda: holder_of(home, first), "the first setup holds the state root")
    second = start(home, *setup)
    refused = subprocess.run([sys.executable, "-m", "invoke", "env", "--profile", "cpu", "--no-wait"], cwd=ROOT,
                             capture_output=True, text=True, env={**os.environ, "DPDEPLOY_HOME": str(home)})
    assert refused.returncode == 2 and f"pid {first.pid}" in refused.stderr and "Traceback" not in refused.stderr
    rc1, out1 = finish(first)
    rc2, out2 = finish(second)
    assert rc1 == 0 and rc2 == 0, out1[-3000:] + out2[-3000:]
    assert "waiting:" in out2 and f"pid {first.pid}" in out2
    builds = [r for r in (home / "runs").iterdir() if any(s.name == "build" and s.status == "done" for s in read_steps(r))]
    assert len(builds) == 1, "exactly one build ran"
    assert {s.name: s.status for s in read_steps(last_run(home, "setup"))} == {"env": "up-to-date", "build": "up-to-date"}
    prefix = home / "envs" / "cpu"
    assert subprocess.run([str(prefix / "bin" / "python"), "-c", "import detectron2._C, densepose"]).returncode == 0

    # mid-build: drop the cached wheels and the stamp so the build compiles
    shutil.rmtree(home / "cache" / "wheels")
    build_stamp.path(prefix).unlink()
    build = ("build", "--profile", "cpu", "--source", D2_SOURCE)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = start(home, *build)
        token = wait_for(lambda p=proc: holder_of(home, p), "the build holds the state root").token
        wait_for(lambda t=token: running(t, "g++") or running(t, "cc1plus"), "the compiler runs")
        assert debris.find(home), "a compile in progress has its temp tree"
        proc.send_signal(sig)
        rc, out = finish(proc, 120)
        if sig == signal.SIGTERM:
            assert rc == 128 + signal.SIGTERM and "interrupted by SIGTERM" in out and "Traceback" not in out, out[-2000:]
            assert orphans.carrying(token) == [] and debris.find(home) == []
            assert read_result(last_run(home, "build")).status == "interrupted"
        else:
            assert orphans.carrying(token), "after kill -9 pip and the compiler run on (what the next run ends)"
            killed = last_run(home, "build")
    rc, out = finish(start(home, *build))
    assert rc == 0 and "a killed run left running" in out and "temp folder(s) an interrupted run left" in out, out[-3000:]
    assert orphans.carrying(token) == [] and debris.find(home) == []
    assert read_result(killed).status == "interrupted" and read_result(last_run(home, "build")).status == "done"

    # mid-env: SIGTERM, then kill -9, while pip installs the lock
    for sig, args in ((signal.SIGTERM, ("--force",)), (signal.SIGKILL, ())):
        proc = start(home, "env", "--profile", "cpu", *args)
        token = wait_for(lambda p=proc: holder_of(home, p), "env holds the state root").token
        wait_for(lambda t=token: running(t, "pip"), "pip runs")
        time.sleep(3)
        proc.send_signal(sig)
        rc, out = finish(proc, 120)
        if sig == signal.SIGTERM:
            assert rc == 128 + signal.SIGTERM and orphans.carrying(token) == [], out[-2000:]
        else:
            assert running(token, "pip"), "pip outlives its killed parent"
    rc, out = finish(start(home, "env", "--profile", "cpu"))
    # the orphaned pip is ended by this run, or has already died on its closed output pipe (EPIPE)
    ended = "a killed run left running" in out or "marked interrupted (their process is gone)" in out
    assert rc == 0 and ended and "created" in out, out[-3000:]
    assert orphans.carrying(token) == [] and debris.find(home) == [] and lock_holder.read(home) is None
