"""The env step's stamp logic: no-op when done, redo an unfinished env, never delete a foreign dir."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dpdeploy.envs import lockfile as locks
from dpdeploy.plan.resolve import resolve
from dpdeploy.plan.settings import resolve as settings
from dpdeploy.records import env_stamp
from dpdeploy.steps import env as env_step
from dpdeploy.steps.context import StepContext
from dpdeploy.steps.pipeline import run_step
from dpdeploy.state import debris

from .conftest import FIXTURES, ROOT, facts_fixture
from .deployed import FakeStream


def context(matrix, prefix, dry=False, facts=None, **flags):
    s = settings({"profile": "cu130", "prefix": str(prefix), "home": str(Path(prefix).parent / "home"), **flags}, env={})
    facts = facts or facts_fixture("nogpu")
    lines = []
    return StepContext(resolve(facts, matrix, s), facts, s, matrix, None, dry, lines.append), lines


def test_fresh_env_marks_first_and_stamps_last(matrix, tmp_path, monkeypatch):
    fake = FakeStream()
    monkeypatch.setattr(env_step, "stream", fake)
    prefix = tmp_path / "env"
    ctx, lines = context(matrix, prefix)
    result = run_step("env", ctx)
    assert result.status == "done", result.output
    lock = ROOT / "env/locks/cu130.txt"
    assert fake.calls == [[ctx.plan.python, "-m", "venv", str(prefix)],
                          [str(prefix / "bin/python"), "-m", "pip", "install", "--require-hashes", "--no-deps",
                           "--progress-bar", "off", "--disable-pip-version-check", "-r", str(lock)]]
    stamp = env_stamp.read(prefix)
    assert stamp.lock_sha256 == locks.load(matrix.profile("cu130")).sha256 and stamp.profile == "cu130"
    total = len(locks.load(matrix.profile("cu130")).pins)
    assert (prefix / env_step.MARKER).is_file() and any(f"[1/{total}] Collecting numpy" in ln for ln in lines)
    assert (stamp.torch, stamp.torchvision, stamp.torch_cuda) == ("2.14.1+cu130", "0.29.1", "13.0")
    # second run: a no-op that runs nothing
    again = run_step("env", context(matrix, prefix)[0])
    assert again.status == "up-to-date" and len(fake.calls) == 2


def test_pip_makes_its_temp_folders_in_the_state_roots_tmp_which_the_sweep_clears(matrix, tmp_path, monkeypatch):
    """pip's temp folders (pip-unpack-*, pip-build-tracker-*, ...) go under <state root>/tmp: an
    install killed midway leaves them where the next run's sweep removes them, not in /tmp."""
    fake, envs = FakeStream(), []

    def stream(argv, log_path, env=None, echo=print, cwd=None):
        envs.append(env)
        return fake(argv, log_path, env=env, echo=echo, cwd=cwd)

    monkeypatch.setattr(env_step, "stream", stream)
    ctx, _ = context(matrix, tmp_path / "env")
    assert run_step("env", ctx).status == "done"
    tmp = debris.tmp_root(ctx.plan.home)
    assert len(envs) == 2 and all(e["TMPDIR"] == str(tmp) for e in envs)
    made = subprocess.run([sys.executable, "-c", "import tempfile; print(tempfile.mkdtemp(prefix='pip-unpack-'))"],
                          env=envs[-1], capture_output=True, text=True, check=True).stdout.strip()
    assert Path(made).parent == tmp
    assert any("pip-unpack-" in line for line in debris.sweep(ctx.plan.home)) and not Path(made).exists()


def test_failed_install_leaves_no_stamp_and_is_redone(matrix, tmp_path, monkeypatch):
    prefix = tmp_path / "env"
    monkeypatch.setattr(env_step, "stream", FakeStream(rc=1, fail_on="pip"))
    failed = run_step("env", context(matrix, prefix)[0])
    assert failed.status == "failed" and not env_stamp.path(prefix).exists()
    assert "left unstamped" in failed.output
    (prefix / "half-installed.txt").write_text("junk")
    fake = FakeStream()
    monkeypatch.setattr(env_step, "stream", fake)
    planned = run_step("env", context(matrix, prefix, dry=True)[0])
    assert planned.status == "planned" and "remove the unfinished env" in planned.output and not fake.calls
    done = run_step("env", context(matrix, prefix)[0])
    assert done.status == "done" and not (prefix / "half-installed.txt").exists()


def test_changed_lock_rebuilds(matrix, tmp_path, monkeypatch):
    prefix = tmp_path / "env"
    monkeypatch.setattr(env_step, "stream", FakeStream())
    run_step("env", context(matrix, prefix)[0])
    stamp = json.loads(env_stamp.path(prefix).read_text())
    env_stamp.path(prefix).write_text(json.dumps({**stamp, "lock_sha256": "0" * 64}))
    assert run_step("env", context(matrix, prefix, dry=True)[0]).status == "planned"


def test_foreign_directory_is_refused_and_kept(matrix, tmp_path, monkeypatch):
    monkeypatch.setattr(env_step, "stream", lambda *a, **k: pytest.fail("nothing may run"))
    prefix = tmp_path / "mine"
    prefix.mkdir()
    (prefix / "thesis.tex").write_text("precious")
    result = run_step("env", context(matrix, prefix)[0])
    assert result.status == "failed" and result.detail["refused"]
    assert "was not made by dpdeploy" in result.output and "next:" in result.output
    assert (prefix / "thesis.tex").read_text() == "precious"


def test_small_disk_refuses_a_new_env_but_keeps_a_made_one(matrix, tmp_path, monkeypatch):
    fake = FakeStream()
    monkeypatch.setattr(env_step, "stream", fake)
    prefix = tmp_path / "env"
    small = facts_fixture("nogpu", disk_free_mib=6000, disk_path=str(tmp_path))
    refused = run_step("env", context(matrix, prefix, facts=small)[0])
    assert refused.status == "failed" and refused.detail["refused"] and not fake.calls and not prefix.exists()
    assert refused.output.startswith(f"not enough disk to create {prefix}")
    assert "5.9 GiB free at" in refused.output and "next: free disk space" in refused.output
    assert run_step("env", context(matrix, prefix)[0]).status == "done"
    again = run_step("env", context(matrix, prefix, facts=small)[0])
    assert again.status == "up-to-date" and len(fake.calls) == 2


def test_empty_directory_is_used(matrix, tmp_path):
    prefix = tmp_path / "empty"
    prefix.mkdir()
    assert env_step.prefix_state(prefix, env_step.Wanted("pip", "l", "s", "cu130", "3.11.2")) == "absent"


def test_lock_for_another_python_is_refused(matrix, tmp_path):
    ctx, _ = context(matrix, tmp_path / "env")
    ctx.plan = ctx.plan.__class__(**{**ctx.plan.__dict__, "python_version": "3.12.3"})
    result = run_step("env", ctx)
    assert result.status == "failed" and "resolved for Python 3.11, the plan uses 3.12" in result.output


def test_conda_install_command_and_unreachable_channel(matrix, tmp_path, monkeypatch):
    monkeypatch.setattr(env_step, "stream", lambda *a, **k: pytest.fail("conda-lock must not run"))
    lockfile = tmp_path / "env/conda-lock-cu130.yml"
    lockfile.parent.mkdir()
    lockfile.write_text("version: 1\n")
    ctx, _ = context(matrix, tmp_path / "p", conda=True)
    monkeypatch.setattr(env_step.condaenv, "require_lockfile", lambda profile, root=tmp_path: lockfile)
    result = env_step.run(ctx, reach=lambda url: f"{url} is unreachable (test)", which=lambda n: "/bin/conda-lock")
    assert result.command == f"conda-lock install --prefix {tmp_path / 'p'} env/conda-lock-cu130.yml"
    assert result.status == "failed" and "conda channel conda-forge is unreachable" in result.output


def test_conda_without_lockfile_says_where_to_make_it(matrix, tmp_path):
    result = run_step("env", context(matrix, tmp_path / "p", conda=True)[0])
    assert result.status == "failed" and "invoke lock --conda --profile cu130" in result.output


def _invoke(*args, home):
    env = {**os.environ, "NO_COLOR": "1", "DPDEPLOY_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=120)


def test_cli_env_for_a_pytorch_index_profile_fails_fast(tmp_path):
    proc = _invoke("env", "--profile", "cu126", "--facts", str(FIXTURES / "facts/nogpu.json"), home=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no lock for profile cu126" in proc.stdout and "download.pytorch.org" in proc.stdout
    assert not (tmp_path / "envs").exists()


def test_cli_env_dry_changes_nothing(tmp_path):
    proc = _invoke("env", "--dry", "--json", "--profile", "cu130", "--facts", str(FIXTURES / "facts/nogpu.json"),
                   home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "planned" and "--require-hashes" in out["command"]
    assert not any(tmp_path.iterdir())

def test_atomic_writes_honour_the_umask(tmp_path):
    from dpdeploy.fsutil import atomic_write_text
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "x.txt", "hi")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def _done_env(matrix, prefix, monkeypatch):
    fake = FakeStream()
    monkeypatch.setattr(env_step, "stream", fake)
    assert run_step("env", context(matrix, prefix)[0]).status == "done"
    return fake


def test_drift_is_found_from_the_installed_packages_and_repaired_in_place(matrix, tmp_path, monkeypatch):
    """`pip install numpy==2.1.3` in the env: the stamp still matches, the packages do not. The env
    step (and `invoke env`'s quick check) must see it, reinstall only that pin hash-checked from the
    lock's own entry, and then agree with `invoke verify`."""
    from dpdeploy.diagnose.drift import packages_checks
    from dpdeploy.records import smoke_pass
    from .deployed import drift

    prefix = tmp_path / "env"
    fake = _done_env(matrix, prefix, monkeypatch)
    smoke_pass.write(prefix, smoke_pass.SmokePass("f", "run-1", "j.xml", "5 passed", "now"))
    lock = ROOT / "env/locks/cu130.txt"
    drift(prefix, "numpy", "2.1.3")
    [before] = [c for c in packages_checks(str(prefix), lock) if c.name == "packages"]
    assert before.status == "fail" and any("numpy: installed 2.1.3" in d for d in before.details)
    s = settings({"profile": "cu130", "prefix": str(prefix)}, env={})
    assert env_step.quick_check(s, tmp_path) is None          # not "up-to-date" from the stamp alone

    repaired = run_step("env", context(matrix, prefix)[0])
    assert repaired.status == "done" and "repaired 1 drifted pin" in repaired.output, repaired.output
    argv = fake.calls[-1]
    assert argv[:8] == [str(prefix / "bin/python"), "-m", "pip", "install", "--require-hashes", "--no-deps",
                        "--force-reinstall", "--progress-bar"]
    wanted = fake.requirements[-1]
    assert wanted.startswith("numpy==2.2.6") and "--hash=sha256:" in wanted and wanted.count("==") == 1
    assert not (prefix / ".dpdeploy-repair.txt").exists()
    assert smoke_pass.read(prefix) is None                    # what the last smoke pass confirmed no longer holds
    [after] = [c for c in packages_checks(str(prefix), lock) if c.name == "packages"]
    assert after.status == "ok", after.details
    assert env_step.quick_check(s, tmp_path).status == "up-to-date"
    calls = len(fake.calls)
    assert run_step("env", context(matrix, prefix)[0]).status == "up-to-date" and len(fake.calls) == calls


def test_a_removed_package_is_reinstalled_and_force_recreates(matrix, tmp_path, monkeypatch):
    from .deployed import drift

    prefix = tmp_path / "env"
    fake = _done_env(matrix, prefix, monkeypatch)
    drift(prefix, "pyyaml", None)
    planned = run_step("env", context(matrix, prefix, dry=True)[0])
    assert planned.status == "planned" and "pyyaml: locked" in planned.output and "not installed" in planned.output
    assert run_step("env", context(matrix, prefix)[0]).status == "done"
    assert fake.requirements[-1].startswith("pyyaml==")
    forced = run_step("env", context(matrix, prefix, force_env=True)[0])
    assert forced.status == "done" and fake.calls[-2] == [forced_python(matrix, prefix), "-m", "venv", str(prefix)]


def forced_python(matrix, prefix):
    return context(matrix, prefix)[0].plan.python


def test_a_failed_repair_says_so_and_points_at_force(matrix, tmp_path, monkeypatch):
    from .deployed import drift

    prefix = tmp_path / "env"
    _done_env(matrix, prefix, monkeypatch)
    drift(prefix, "numpy", "2.1.3")
    monkeypatch.setattr(env_step, "stream", FakeStream(rc=1, fail_on="--force-reinstall"))
    failed = run_step("env", context(matrix, prefix)[0])
    assert failed.status == "failed" and "numpy: installed 2.1.3" in failed.output
    assert "invoke env --force" in failed.output


def test_build_tools_dropped_for_a_runtime_env_are_not_drift(matrix, tmp_path, monkeypatch):
    """`invoke env --drop-build-tools` (the image's build stage): the matrix's build-only pins are
    uninstalled and listed in the stamp; verify, the env step and its quick check agree that the
    env still matches its lock, and nothing reinstalls them."""
    from dpdeploy.diagnose.drift import packages_checks

    prefix = tmp_path / "env"
    fake = _done_env(matrix, prefix, monkeypatch)
    lock = ROOT / "env/locks/cu130.txt"
    locked = set(locks.parse_lock(lock.read_text()))
    expected = sorted(n for n in matrix.build_only if n in locked)
    assert {"ninja", "nvidia-cuda-nvcc"} <= set(expected)
    done = env_step.drop_build_tools(prefix, matrix.build_only, echo=lambda line: None)
    assert done.status == "done" and done.detail["dropped"] == expected
    argv = fake.calls[-1]
    assert argv[1:5] == ["-m", "pip", "uninstall", "-y"] and sorted(argv[6:]) == expected
    stamp = env_stamp.read(prefix)
    assert list(stamp.dropped) == expected
    checks = {c.name: c for c in packages_checks(str(prefix), lock, dropped=stamp.dropped)}
    assert checks["packages"].status == "ok" and checks["build-tools"].details == tuple(expected)
    [undropped] = [c for c in packages_checks(str(prefix), lock) if c.name == "packages"]
    assert undropped.status == "fail" and any(d.startswith("ninja:") for d in undropped.details)
    calls = len(fake.calls)
    assert run_step("env", context(matrix, prefix)[0]).status == "up-to-date" and len(fake.calls) == calls
    s = settings({"profile": "cu130", "prefix": str(prefix)}, env={})
    assert env_step.quick_check(s, tmp_path).status == "up-to-date"
    again = env_step.drop_build_tools(prefix, matrix.build_only, echo=lambda line: None)
    assert again.status == "up-to-date" and len(fake.calls) == calls


def test_dropping_build_tools_needs_a_finished_env(tmp_path, matrix):
    result = env_step.drop_build_tools(tmp_path / "none", matrix.build_only, echo=lambda line: None)
    assert result.status == "failed" and result.detail["refused"] and "not a finished env" in result.output
