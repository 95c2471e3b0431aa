"""Offline bundles: made from the committed lock (pip stands in here, writing a file per pin),
checked in full, and refused with what is wrong (incomplete, tampered, another platform or Python)
before anything is written."""
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

from dpdeploy.bundle import unpack
from dpdeploy.bundle.make import BundleError, make
from dpdeploy.envs import lockfile as locks
from dpdeploy.records import bundle_manifest as bm
from dpdeploy.runner import Completed

from .conftest import FIXTURES, ROOT, invoke

PIN = "02b5c4e295e990042a714712c21dc79b731e8833"
SDISTS = {"fvcore", "antlr4-python3-runtime"}   # sdist-only on PyPI: built into wheels when bundling


class FakePip:
    """`pip download` writes a wheel (or an sdist) per pin of the lock; `pip wheel` builds an sdist."""

    def __init__(self, skip: str = ""):
        self.calls, self.skip = [], skip

    def __call__(self, argv, **kw):
        self.calls.append(list(argv))
        if "download" in argv:
            into = Path(argv[argv.index("-d") + 1])
            into.mkdir(parents=True)
            lock = locks.parse_lock(Path(argv[argv.index("-r") + 1]).read_text())
            for name, pins in lock.items():
                if name != self.skip:
                    dist = name.replace("-", "_")
                    file = f"{dist}-{pins[0].version}.tar.gz" if name in SDISTS else \
                        f"{dist}-{pins[0].version}-py3-none-any.whl"
                    (into / file).write_bytes(f"{name} {pins[0].version}".encode())
        elif "wheel" in argv:
            sdist = Path(argv[-1])
            out = Path(argv[argv.index("-w") + 1])
            (out / sdist.name.replace(".tar.gz", "-py3-none-any.whl")).write_bytes(sdist.read_bytes() + b" built")
        return Completed(tuple(argv), 0, "", "")


@pytest.fixture
def host_lock(matrix):
    return locks.load(matrix.profile("host"))


def host_lock_of():
    from dpdeploy.plan import matrix as matrix_mod

    return locks.load(matrix_mod.load().profile("host"))


def bundle_of(tmp_path: Path, lock, weights: bool = True, runner=None) -> Path:
    source = tmp_path / f"detectron2-{PIN}.tar.gz"
    source.write_bytes(b"the detectron2 source archive")
    ckpt = tmp_path / "model.pkl"
    ckpt.write_bytes(b"a generated checkpoint")
    out = tmp_path / "bundle.tar"
    make(lock, ROOT / lock.path, out, python="python3", python_version="3.11", machine="x86_64", commit=PIN,
         source=source, weights=ckpt if weights else None, model="densepose_rcnn_R_50_FPN_s1x",
         weights_trust="unverified", runner=runner or FakePip(), echo=lambda line: None)
    return out


def rewrite(bundle: Path, change) -> None:
    """Rewrite the archive with change(name, data) -> data (None drops the member); extra members added."""
    with tarfile.open(bundle) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(bundle, "w") as tar:
        for name, data in [*members, ("wheels/extra-1.0-py3-none-any.whl", None)]:
            data = change(name, data)
            if data is not None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_bundle_holds_every_locked_wheel_the_source_and_the_weights(tmp_path, host_lock):
    pip = FakePip()
    bundle = bundle_of(tmp_path, host_lock, runner=pip)
    assert pip.calls[0][4:8] == ["download", "--no-deps", "--require-hashes", "-d"]
    assert sorted(Path(c[-1]).name.split("-")[0] for c in pip.calls[1:]) == ["antlr4_python3_runtime", "fvcore"]
    manifest, digest = unpack.check(bundle, host_lock, "3.11.7", "x86_64", PIN)
    assert (manifest.profile, manifest.python_tag, manifest.platform) == ("host", "cp311", "linux_x86_64")
    assert len(manifest.of_kind("wheel")) == len(host_lock.pins) and manifest.lock_sha256 == host_lock.sha256
    done = unpack.unpack(bundle, manifest, digest, tmp_path / "home")
    assert done.source.name == f"detectron2-{PIN}.tar.gz" and done.weights.read_bytes() == b"a generated checkpoint"
    lines = done.requirements.read_text().splitlines()
    assert len(lines) == len(host_lock.pins) and all(" --hash=sha256:" in line for line in lines)
    assert "fvcore==0.1.5.post20221221 --hash=sha256:" in done.requirements.read_text()
    assert unpack.unpack(bundle, manifest, digest, tmp_path / "home").root == done.root   # reused


def test_bundle_without_a_wheel_for_a_pin_is_not_written(tmp_path, host_lock):
    with pytest.raises(BundleError, match="no wheel for numpy==2.2.6"):
        bundle_of(tmp_path, host_lock, runner=FakePip(skip="numpy"))
    assert not (tmp_path / "bundle.tar").exists()


@pytest.mark.parametrize("change, message", [
    (lambda n, d: d + b"!" if n.startswith("wheels/numpy") else d if d is not None else None,
     "wheels/numpy-2.2.6-py3-none-any.whl has sha256"),
    (lambda n, d: d if d is not None else b"not listed", "extra-1.0-py3-none-any.whl is not in its manifest"),
    (lambda n, d: None if n.startswith("source/") or d is None else d, "incomplete, 1 listed file(s) missing"),
    (lambda n, d: None if n == bm.FILE or d is None else d, "incomplete, no manifest.json"),
])
def test_tampered_or_incomplete_bundle_is_refused(tmp_path, host_lock, change, message):
    bundle = bundle_of(tmp_path, host_lock)
    rewrite(bundle, change)
    with pytest.raises(BundleError) as err:
        unpack.check(bundle, host_lock, "3.11.7", "x86_64", PIN)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("python, machine, pin, message", [
    ("3.12.3", "x86_64", PIN, "made for Python 3.11, this deployment is Python 3.12"),
    ("3.11.7", "aarch64", PIN, "made for platform linux_x86_64, this deployment is platform linux_aarch64"),
    ("3.11.7", "x86_64", "0" * 40, "made for detectron2 commit"),
])
def test_bundle_for_another_platform_python_or_pin_is_refused(tmp_path, host_lock, python, machine, pin, message):
    bundle = bundle_of(tmp_path, host_lock)
    with pytest.raises(BundleError, match=message):
        unpack.check(bundle, host_lock, python, machine, pin)


def test_bundle_of_another_lock_is_refused(tmp_path, host_lock, matrix):
    bundle = bundle_of(tmp_path, host_lock)
    other = locks.Lock.parse("host", host_lock.path, (ROOT / host_lock.path).read_text() + "\n")
    with pytest.raises(BundleError, match="made from another env/locks/host.txt"):
        unpack.check(bundle, other, "3.11.7", "x86_64", PIN)


def test_setup_refuses_a_tampered_bundle_before_anything_is_written(tmp_path, host_lock):
    bundle = bundle_of(tmp_path, host_lock)
    rewrite(bundle, lambda n, d: d + b"!" if n.startswith("wheels/scipy") else d if d is not None else None)
    facts = json.loads((FIXTURES / "facts" / "nogpu.json").read_text())
    facts["host_torch"] = {"python": "/opt/py/bin/python", "python_version": "3.11.7", "torch": "2.14.1",
                           "torchvision": "0.29.1", "site_packages": ["/opt/py/lib/python3.11/site-packages"]}
    (tmp_path / "facts.json").write_text(json.dumps(facts))
    home = tmp_path / "home"
    done = invoke("setup", "--offline", "--bundle", str(bundle), "--profile", "host", "--python", "/opt/py/bin/python",
                  "--facts", str(tmp_path / "facts.json"), home=home, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().count("\n") == 0 and "wheels/scipy" in done.stderr and "tampered" in done.stderr
    assert not home.exists()
    missing = invoke("setup", "--offline", "--profile", "cpu", "--facts", str(FIXTURES / "facts" / "nogpu.json"),
                     home=home, timeout=300)
    assert missing.returncode == 2 and "--offline needs --bundle FILE" in missing.stderr and not home.exists()


def test_gpu_host_script_is_valid_bash_and_calls_existing_options():
    """benchmarks/gpu_host_offline.sh runs only on a GPU host; here: it parses and its flags exist."""
    import inspect
    import subprocess

    from dpdeploy.cli.setup import setup as setup_task
    script = ROOT / "benchmarks" / "gpu_host_offline.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    setup = {name.replace("_", "-") for name in inspect.signature(setup_task.body).parameters}  # not get_arguments:
    # invoke's get_arguments consumes the task's help texts, which the docs test then misses
    assert {"offline", "bundle", "force-smoke"} <= setup and "REQUIRE_GPU=1" in text
    for flag in ("--offline", "--bundle", "--force-smoke"):
        assert flag in text
    bench = text[text.index("predict_bench.py"):].split("| tee")[0]   # its figures are the GPU's, not the CPU's
    assert "--device cuda" in bench and "fp16" in bench
    options = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "predict_bench.py"), "--help"],
                             capture_output=True, text=True).stdout
    assert "--device" in options and "--modes" in options


def test_bundle_cli_plans_and_refuses_a_source_that_is_not_an_archive(tmp_path):
    source = tmp_path / f"detectron2-{PIN}.tar.gz"
    source.write_bytes(b"archive")
    dry = invoke("bundle", "--profile", "host", "--out", str(tmp_path / "b.tar"), "--source", str(source), "--dry",
                 home=tmp_path / "home", timeout=300)
    assert dry.returncode == 0 and "would bundle env/locks/host.txt" in dry.stdout and not (tmp_path / "b.tar").exists()
    bad = invoke("bundle", "--profile", "host", "--out", str(tmp_path / "b.tar"), "--source", str(tmp_path),
                 home=tmp_path / "home", timeout=300)
    assert bad.returncode == 2 and "needs the detectron2 source as an archive" in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and not (tmp_path / "b.tar").exists()


def test_offline_weights_step_never_calls_the_zoo_without_bundled_weights(tmp_path, host_lock, matrix, monkeypatch):
    from dpdeploy.inference import weights as w
    from dpdeploy.steps import weights as weights_step

    from .deployed import context

    bundle = bundle_of(tmp_path, host_lock, weights=False)
    manifest, digest = unpack.check(bundle, host_lock, "3.11.7", "x86_64", PIN)
    ctx, lines = context(matrix, tmp_path)
    ctx.bundle = unpack.unpack(bundle, manifest, digest, tmp_path / "home")
    monkeypatch.setattr(w, "fetch", lambda *a, **kw: pytest.fail("offline: the weights step must not fetch"))
    done = weights_step.run(ctx)
    assert done.status == "skipped" and "offline, and the bundle holds no weights" in done.output
