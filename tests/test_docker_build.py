"""A real image build: `invoke docker.build` with buildah on a local Debian 12 base (no registry).

CI builds the ``testext`` target with the ``cpu`` profile: the real locked env from PyPI (with
the host's CA bundle as the build secret), then dpdeploy's own extension compiled and loaded
in the image. The full runtime image (detectron2 + DensePose, its smoke on the CPU) is built
when DPDEPLOY_TEST_D2_SOURCE names a local detectron2 clone. Images live in a storage root of
their own, removed at the end.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from dpdeploy.container import baseimage, context as buildcontext, engines as containers

ROOT = Path(__file__).resolve().parent.parent
INVOKE = str(Path(sys.executable).with_name("invoke"))
STORAGE = Path(os.environ.get("DPDEPLOY_TEST_STORAGE_ROOT", "/var/tmp/dpdeploy-test-storage"))
have_tarball = baseimage.tarball_path().is_file()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (shutil.which("buildah") and shutil.which("podman")),
                       reason="needs buildah and podman (apt-get install -y buildah podman)"),
    pytest.mark.skipif(not (have_tarball or shutil.which("debootstrap")),
                       reason="needs debootstrap for the local Debian base (apt-get install -y debootstrap)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap and chroot isolation need root"),
]


@pytest.fixture(scope="module")
def storage():
    """The base image in a storage root of the tests' own; everything in it removed afterwards."""
    eng = containers.pick_engine("podman", storage_root=str(STORAGE))
    print(baseimage.ensure(eng))
    yield eng
    buildah = containers.pick_engine("buildah", storage_root=str(STORAGE), storage_driver=eng.storage_driver)
    subprocess.run([*buildah.base(), "rm", "--all"], capture_output=True)
    subprocess.run([*buildah.base(), "rmi", "--all", "--force"], capture_output=True)
    shutil.rmtree(STORAGE, ignore_errors=True)


def docker_build(tmp_path, storage, *args, root=ROOT):
    env = {**os.environ, "DPDEPLOY_HOME": str(tmp_path / "home")}
    done = subprocess.run([INVOKE, "docker.build", "--profile", "cpu", "--base-image", baseimage.TAG, "--json",
                           "--engine", "buildah", "--storage-root", str(STORAGE), "--storage-driver",
                           storage.storage_driver, *args], cwd=root, env=env, capture_output=True, text=True)
    result = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
    log = Path(result.get("log", "/nonexistent"))
    tail = "\n".join(log.read_text().splitlines()[-40:]) if log.is_file() else done.stderr
    assert done.returncode == 0 and result["status"] == "done", tail
    stages = ", ".join(f"{st['target']} {st['status']} {st.get('seconds', 0)} s" for st in result.get("stages", []))
    print(f"{result['tag']}: {result['seconds']} s, {result['size']}" + (f" (stage {stages})" if stages else ""))
    return result


def in_image(storage, tag, *argv):
    """Run argv in a working container of ``tag`` (buildah run, chroot isolation); its stdout."""
    buildah = containers.pick_engine("buildah", storage_root=str(STORAGE), storage_driver=storage.storage_driver)
    made = subprocess.run([*buildah.base(), "from", "--pull-never", tag], capture_output=True, text=True, check=True)
    name = made.stdout.strip()
    try:
        done = subprocess.run([*buildah.base(), "run", "--isolation", "chroot", name, "--", *argv], capture_output=True,
                              text=True, timeout=1800)
    finally:
        subprocess.run([*buildah.base(), "rm", name], capture_output=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_env_stage_and_test_extension_build_in_the_image(tmp_path, storage):
    result = docker_build(tmp_path, storage, "--target", "testext")
    assert "--secret" in result["command"] or not containers.host_ca_bundle()
    out = in_image(storage, result["tag"], "/opt/dpdeploy/env/bin/python", "-c",
                   "import json, torch, dpdeploy_testext._C as c; "
                   "print(json.dumps([torch.__version__, c.add_one(torch.zeros(2)).tolist()]))")
    version, added = json.loads(out.strip().splitlines()[-1])
    assert version.startswith(result["build_args"]["TORCH_VERSION"]) and added == [1.0, 1.0]
    stamp = json.loads(in_image(storage, result["tag"], "cat", "/opt/dpdeploy/env/.dpdeploy-env.json"))
    assert stamp["profile"] == "cpu" and stamp["lock"] == "env/locks/cpu.txt"
    assert "/run/secrets/ca" not in in_image(storage, result["tag"], "env"), "the CA secret never lands in the image"


@pytest.mark.detectron2
@pytest.mark.skipif(not os.environ.get("DPDEPLOY_TEST_D2_SOURCE"),
                    reason="needs a local detectron2 clone: set DPDEPLOY_TEST_D2_SOURCE")
def test_runtime_image_with_detectron2_passes_its_smoke_on_cpu(tmp_path, storage):
    checkout = tmp_path / "checkout"   # a snapshot: the edit below is its only change
    buildcontext.stage_repo(ROOT, checkout)
    result = docker_build(tmp_path, storage, "--target", "runtime", "--source", os.environ["DPDEPLOY_TEST_D2_SOURCE"],
                          root=checkout)
    [stage] = result["stages"]
    assert stage["target"] == "build" and stage["status"] == "built" and result["build_args"]["BUILT_IMAGE"] == stage["tag"]
    buildah = containers.pick_engine("buildah", storage_root=str(STORAGE), storage_driver=storage.storage_driver)
    config_user = subprocess.run([*buildah.base(), "inspect", "--type", "image", "--format", "{{.OCIv1.Config.User}}",
                                  result["tag"]], capture_output=True, text=True, check=True).stdout.strip()
    assert config_user == "1000:1000" and in_image(storage, result["tag"], "id", "-u").strip() == "1000", \
        "the image itself runs as a user (its USER), not only when a test asks"
    usr_bin = in_image(storage, result["tag"], "ls", "/usr/bin").split()
    assert not {"g++", "gcc", "cc", "c++", "ccache", "git"} & set(usr_bin) and "tini" in usr_bin
    venv_bin = set(in_image(storage, result["tag"], "ls", "/app/.venv/bin").split())
    assert "invoke" in venv_bin and not {"ruff", "uv", "pytest", "hadolint", "weasyprint", "actionlint"} & venv_bin, \
        "the runtime venv is requirements/runtime.txt, not the tools venv"
    env_bin = set(in_image(storage, result["tag"], "ls", "/opt/dpdeploy/env/bin").split())
    assert not {"nvcc", "ptxas", "ninja"} & env_bin
    weighed = subprocess.run([INVOKE, "docker.size", "--tag", result["tag"], "--json", "--engine", "buildah",
                              "--storage-root", str(STORAGE), "--storage-driver", storage.storage_driver],
                             cwd=ROOT, capture_output=True, text=True)
    assert weighed.returncode == 0, weighed.stderr
    size = json.loads(weighed.stdout)
    env, venv = size["packages"]["/opt/dpdeploy/env"], size["packages"]["/app/.venv"]
    assert {"torch", "detectron2", "numpy"} <= set(env) and not {"ninja", "wheel"} & set(env)
    assert "invoke" in venv and not {"ruff", "pytest", "uv"} & set(venv)
    assert size["total"] > sum(env.values()) + sum(venv.values()) and size["layers"][0]["size"] > 0
    smoke = in_image(storage, result["tag"], "/app/.venv/bin/invoke", "--search-root", "/app", "smoke")
    assert "smoke: passed" in smoke
    # `invoke docker.run`, as a user serves a folder: buildah runs the image (no OCI runtime here)
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    Image.new("RGB", (128, 96), (128, 128, 128)).save(photos / "grey.png")
    done = subprocess.run([INVOKE, "docker.run", str(photos), "--out", str(out), "--tag", result["tag"], "--engine",
                           "buildah", "--no-gpus", "--weights", "synthetic", "--storage-root", str(STORAGE),
                           "--storage-driver", storage.storage_driver], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == 0 and [(i["stem"], i["status"]) for i in summary["images"]] == [("grey", "ok")]
    assert (out / "grey" / "dp_contour.png").stat().st_size > 0 and (out / "grey" / "result.json").is_file()

    # An edit of the predictor in that checkout: the build stage image is reused, only
    # the runtime's engine layers follow; the edited file is what the new image holds.
    marker = "# an engine-only edit (tests/test_docker_build.py)"
    with open(checkout / "dpdeploy" / "inference" / "predict.py", "a") as fh:
        fh.write(marker + "\n")
    again = docker_build(tmp_path, storage, "--target", "runtime", "--source", os.environ["DPDEPLOY_TEST_D2_SOURCE"],
                         root=checkout)
    assert [(st["status"], st["tag"]) for st in again["stages"]] == [("reused", stage["tag"])]
    assert marker in in_image(storage, again["tag"], "tail", "-n", "1", "/app/dpdeploy/inference/predict.py")
    assert "smoke" in in_image(storage, again["tag"], "/app/.venv/bin/invoke", "--search-root", "/app", "--list")
    print(f"engine-only edit: {again['seconds']} s for the runtime image, first build {stage['seconds']} s "
          f"(build stage) + {result['seconds']} s")
