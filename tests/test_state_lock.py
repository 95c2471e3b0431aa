"""One command at a time per state root, and what a killed or interrupted one leaves behind.

Real processes throughout: a holder is a separate Python process (``hold`` in it), its
children run through ``dpdeploy.runner``; the end-to-end cases with real `invoke setup`,
`invoke env` and `invoke build` processes are in tests/test_state_lock_e2e.py.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dpdeploy.records import lock_holder
from dpdeploy.records.run import RunRecord, RunResult, read_result
from dpdeploy.state import debris, lock, orphans

from .conftest import ROOT

# A holder: takes the lock for COMMAND, makes a temp build dir, runs `sleep 300` through the
# runner (its own process group, carrying the run token), prints READY, waits.
HOLDER = textwrap.dedent("""
    import sys, tempfile
    from pathlib import Path
    from dpdeploy import runner
    from dpdeploy.state import debris, lock
    home = Path(sys.argv[1])
    with lock.hold(home, "invoke setup (test holder)", echo=lambda line: print(line, flush=True)):
        tmp_root = debris.tmp_root(home)
        tmp_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="dpdeploy-build-", dir=tmp_root) as tmp:
            (Path(tmp) / "obj.o").write_bytes(b"x" * 4096)
            print("READY", flush=True)
            if sys.argv[2] == "child":
                runner.stream(["sleep", "300"], log_path=str(home / "child.log"))
            elif sys.argv[2] == "unregistered":   # started but not yet known to the runner
                import subprocess; subprocess.Popen(["sleep", "300"], start_new_session=True).wait()
            else:
                import time; time.sleep(float(sys.argv[2]))
""")


def start_holder(home: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(home), mode], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    for line in proc.stdout:
        if line.strip() == "READY":
            return proc
    raise AssertionError(f"holder never got ready (exit {proc.wait()})")


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.1)


def test_a_second_command_is_told_who_holds_the_root_and_refused_with_no_wait(tmp_path):
    holder = start_holder(tmp_path, "30")
    try:
        with pytest.raises(lock.Busy) as busy:
            with lock.hold(tmp_path, "invoke env", wait=False):
                pass
        text = str(busy.value)
        assert f"pid {holder.pid}" in text and "invoke setup (test holder)" in text and "since" in text
        assert "next:" in text and (tmp_path / "tmp").is_dir()    # the holder's temp dir was not swept
    finally:
        holder.kill()
        holder.wait()


def test_a_second_command_waits_for_the_first(tmp_path):
    holder = start_holder(tmp_path, "1.5")
    said = []
    with lock.hold(tmp_path, "invoke env", echo=said.append, poll_s=0.1) as held:
        assert not list(debris.tmp_root(tmp_path).glob("*"))   # in only after it let go (its temp dir is gone)
        assert holder.wait(timeout=10) == 0
        assert lock_holder.read(tmp_path).pid == os.getpid()
    assert said and said[0].startswith("waiting:") and f"pid {holder.pid}" in said[0]
    assert held.ended == [] and held.swept == []                 # a clean exit leaves nothing behind
    assert lock_holder.read(tmp_path) is None


def test_after_kill_9_the_next_holder_ends_the_orphans_sweeps_and_marks_the_run(tmp_path):
    record = RunRecord.create(tmp_path, "setup")
    holder = start_holder(tmp_path, "child")
    token = lock_holder.read(tmp_path).token
    wait_for(lambda: orphans.carrying(token))
    record.write_result(RunResult("setup", "running", started=time.time(), pid=holder.pid))
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    left = orphans.carrying(token)
    assert left, "sleep outlives its killed parent (the case to clean up)"
    assert debris.find(tmp_path)                                  # its temp build dir is still there
    with lock.hold(tmp_path, "invoke setup", echo=lambda line: None) as held:
        assert held.ended == left and orphans.carrying(token) == []
        assert any("dpdeploy-build-" in s for s in held.swept) and debris.find(tmp_path) == []
        assert held.marked == [record.id]
    result = read_result(record.folder)
    assert result.status == "interrupted" and "killed" in result.error


def test_sigterm_ends_the_children_and_removes_the_temp_folders(tmp_path):
    holder = start_holder(tmp_path, "child")
    token = lock_holder.read(tmp_path).token
    wait_for(lambda: orphans.carrying(token))
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(timeout=30) == 128 + signal.SIGTERM
    assert orphans.carrying(token) == []                          # sleep was ended with its parent
    assert debris.find(tmp_path) == [] and lock_holder.read(tmp_path) is None
    # the runner says so; or the signal came while Popen was still waiting for the exec, before the
    # runner knew its child, and the lock ended it (the next test; seen in CI under load)
    assert (tmp_path / "child.log").read_text() == "" or \
        "interrupted; ending sleep" in (tmp_path / "child.log").read_text()


def test_sigterm_ends_a_child_the_runner_did_not_know_yet(tmp_path):
    """A signal between a child's start and its registration with the runner (seen once in CI):
    the lock ends whatever carries its run token."""
    holder = start_holder(tmp_path, "unregistered")
    token = lock_holder.read(tmp_path).token
    wait_for(lambda: orphans.carrying(token))
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(timeout=30) == 128 + signal.SIGTERM
    assert orphans.carrying(token) == [] and lock_holder.read(tmp_path) is None


def test_a_live_running_record_is_not_marked(tmp_path):
    record = RunRecord.create(tmp_path, "setup")
    record.write_result(RunResult("setup", "running", started=time.time(), pid=os.getpid()))
    with lock.hold(tmp_path, "invoke env", echo=lambda line: None) as held:
        assert held.marked == []
    assert read_result(record.folder).status == "running"
    assert json.loads((record.folder / "result.json").read_text())["pid"] == os.getpid()


@pytest.mark.parametrize("text", ["{garbage", '{"schema_version": 1, "pid": "1", "command": "x", "since": 0, "token": "t"}',
                                  '{"schema_version": 1, "pid": 1, "command": "x", "since": "then", "token": "t"}', "[]"])
def test_a_damaged_holder_record_is_ignored_not_a_crash(tmp_path, text):
    lock_holder.path(tmp_path).write_text(text)
    assert lock_holder.read(tmp_path) is None
    with lock.hold(tmp_path, "invoke env", echo=lambda line: None) as held:
        assert held.ended == [] and lock_holder.read(tmp_path).pid == os.getpid()


def test_end_all_ends_a_child_streamed_from_another_thread(tmp_path, monkeypatch):
    """An interrupt reaches the main thread only; a worker streamed from a thread (predict's
    per-device workers) is ended by ``runner.end_all``, never left running, and so is one a
    thread starts after it (seen in CI: the second CPU worker starting as Ctrl-C came)."""
    import threading

    from dpdeploy import runner

    monkeypatch.setattr(runner, "_ENDING", threading.Event())   # this process goes on after end_all

    codes: list[int] = []
    waiter = threading.Thread(target=lambda: codes.append(
        runner.stream(["sleep", "300"], log_path=str(tmp_path / "w.log"))), daemon=True)
    waiter.start()
    wait_for(lambda: runner._LIVE)
    [proc] = list(runner._LIVE)
    runner.end_all()
    waiter.join(timeout=30)
    assert codes == [-signal.SIGTERM] and proc.poll() is not None and not runner._LIVE
    late = runner.stream(["sleep", "300"], log_path=str(tmp_path / "late.log"))
    assert late == -signal.SIGTERM and not runner._LIVE and "interrupted" in (tmp_path / "late.log").read_text()


def test_the_sweep_knows_weights_imports_and_bundle_unpacks_and_leaves_finished_entries(tmp_path):
    weights, bundles = tmp_path / "cache" / "weights", tmp_path / "bundles"
    (bundles / ".0123456789abcdef-x1y2").mkdir(parents=True)
    (bundles / "0123456789abcdef").mkdir()
    weights.mkdir(parents=True)
    (weights / "m.pkl.import").write_bytes(b"half")
    (weights / "m.pkl").write_bytes(b"done")
    assert debris.find(tmp_path) == [bundles / ".0123456789abcdef-x1y2", weights / "m.pkl.import"]


@pytest.mark.parametrize("args", [
    ["testext", "--no-wait"],
    ["docker.build", "--no-wait", "--engine", "buildah", "--ca", "none"],
    "offline",
])
def test_commands_that_write_the_state_root_take_its_lock_first(tmp_path, args):
    """testext builds in <home>/tmp and the wheel cache, docker.build stages cache/docker/context-*,
    setup --offline unpacks into bundles/: a second one must wait (here: --no-wait, refused) and
    write nothing while another command holds the root (its sweep would take a live run's folders)."""
    from .conftest import invoke
    from .test_bundle import bundle_of, host_lock_of

    home = tmp_path / "home"
    if args == "offline":
        bundle = bundle_of(tmp_path, host_lock_of())
        facts = json.loads((ROOT / "tests" / "fixtures" / "facts" / "nogpu.json").read_text())
        facts["host_torch"] = {"python": "/opt/py/bin/python", "python_version": "3.11.7", "torch": "2.14.1",
                               "torchvision": "0.29.1", "site_packages": ["/opt/py/lib/python3.11/site-packages"]}
        (tmp_path / "facts.json").write_text(json.dumps(facts))
        args = ["setup", "--no-wait", "--offline", "--bundle", str(bundle), "--profile", "host",
                "--python", "/opt/py/bin/python", "--facts", str(tmp_path / "facts.json")]
    holder = start_holder(home, "60")
    try:
        before = sorted(p.relative_to(home) for p in home.rglob("*"))
        done = invoke(*args, home=home, timeout=120)
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"pid {holder.pid}" in done.stderr and "invoke setup (test holder)" in done.stderr, done.stderr
        assert sorted(p.relative_to(home) for p in home.rglob("*")) == before
    finally:
        holder.kill()
        holder.wait()
