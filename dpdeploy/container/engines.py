"""Container engines: which one to use, and the exact command lines (pure, tested).

Order: ``docker buildx`` when a Docker engine answers (``docker info`` succeeds), else
``buildah`` (builds without a daemon), else ``podman``. Running an image: ``docker run`` with a
daemon, else ``podman run``; ``buildah`` (asked for by name) runs it in a working container with
chroot isolation, for hosts whose OCI runtime is denied (CI runners in containers: crun's
``setrlimit ... Operation not permitted``), CPU only. buildah/podman take the same storage flags
so that an image one of them made (e.g. the local base image, imported with podman) is seen by
the other.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from dpdeploy.runner import Runner, run

ENGINES = ("docker", "buildah", "podman")
# Where the Dockerfile's stages find a CA bundle passed as the build secret `ca`
# (docker/ca-env.sh points PIP_CERT, REQUESTS_CA_BUNDLE and SSL_CERT_FILE at it).
CA_SECRET_ID = "ca"
# Host CA bundles, first found wins (Debian/Ubuntu, then Fedora/RHEL): behind a TLS-inspecting
# proxy they hold its CA, which pip in the container needs (seen on this project's machines).
HOST_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


class EngineError(Exception):
    """No usable container engine: what, why, next step."""


@dataclass(frozen=True)
class Engine:
    """A container engine and the global flags every one of its commands gets."""

    name: str                     # docker | buildah | podman
    exe: str
    storage_driver: str = ""      # buildah/podman --storage-driver ("" = their own config)
    storage_root: str = ""        # buildah/podman --root ("" = their default)
    isolation: str = ""           # buildah/podman --isolation for RUN steps ("" = their default)

    def base(self) -> list[str]:
        argv = [self.exe]
        if self.name != "docker":
            argv += ["--storage-driver", self.storage_driver] if self.storage_driver else []
            argv += ["--root", self.storage_root] if self.storage_root else []
        return argv


@dataclass(frozen=True)
class BuildRequest:
    context: str
    dockerfile: str
    tag: str
    target: str = ""
    build_args: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)   # id -> host file


def build_argv(engine: Engine, req: BuildRequest) -> list[str]:
    """The build command line for ``engine``."""
    if engine.name == "docker":
        argv = [engine.exe, "buildx", "build", "--load"]
    elif engine.name == "buildah":
        # docker format keeps HEALTHCHECK; --layers caches each step as docker does (buildah's default is off)
        argv = [*engine.base(), "bud", "--format", "docker", "--layers"]
    else:
        argv = [*engine.base(), "build", "--format", "docker"]
    if engine.name != "docker" and engine.isolation:
        argv += ["--isolation", engine.isolation]
    argv += ["--file", req.dockerfile, "--tag", req.tag]
    argv += ["--target", req.target] if req.target else []
    for name, value in req.build_args.items():
        argv += ["--build-arg", f"{name}={value}"]
    for sid, src in req.secrets.items():
        argv += ["--secret", f"id={sid},src={src}"]
    return [*argv, req.context]


# The image's state root and user: docker/Dockerfile's DPDEPLOY_HOME and USER (tests/test_docker.py
# keeps them equal).
IMAGE_HOME = "/opt/dpdeploy"
IMAGE_UID = 1000
SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class RunRequest:
    image: str
    inputs: Sequence[str]   # host files / folders, each mounted read-only at /data/in/<i>-<name>
    out: str                # host folder, mounted at /data/out
    gpus: bool = True
    # "synthetic"; a host checkpoint file (mounted at /data/weights/<name>); or a host
    # `invoke weights` cache folder (mounted over the image's <home>/cache/weights); all read-only.
    weights: str = ""


def predict_args(req: RunRequest) -> tuple[list[str], list[str]]:
    """The volume flags and the task's arguments: ``invoke predict INPUTS --out /data/out``."""
    inside = [f"/data/in/{i}-{Path(p).name}" for i, p in enumerate(req.inputs)]
    volumes: list[str] = []
    for host, path in zip(req.inputs, inside, strict=True):
        volumes += ["--volume", f"{host}:{path}:ro"]
    volumes += ["--volume", f"{req.out}:/data/out"]
    task = ["predict", ",".join(inside), "--out", "/data/out"]
    if req.weights == SYNTHETIC:
        task += ["--weights", SYNTHETIC]
    elif req.weights and Path(req.weights).is_dir():
        volumes += ["--volume", f"{req.weights}:{IMAGE_HOME}/cache/weights:ro"]
    elif req.weights:
        checkpoint = f"/data/weights/{Path(req.weights).name}"
        volumes += ["--volume", f"{req.weights}:{checkpoint}:ro"]
        task += ["--weights", checkpoint]
    return volumes, task


def run_argv(engine: Engine, req: RunRequest) -> list[str]:
    """``docker run`` / ``podman run`` of ``invoke predict`` on the inputs, GPUs passed through."""
    if engine.name == "buildah":
        raise EngineError("buildah runs an image in a working container: use buildah_run_argvs")
    argv = [*engine.base(), "run", "--rm"]
    if req.gpus:
        # docker: NVIDIA Container Toolkit's --gpus; podman: CDI device names
        # (nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml, per NVIDIA's CDI docs).
        argv += ["--gpus", "all"] if engine.name == "docker" else ["--device", "nvidia.com/gpu=all"]
    volumes, task = predict_args(req)
    # The image's ENTRYPOINT is invoke: this is `invoke predict INPUTS --out /data/out`.
    return [*argv, *volumes, req.image, *task]


def inspect_argv(engine: Engine, image: str) -> list[str]:
    """``buildah inspect`` of an image: its config as JSON (see entrypoint_of)."""
    return [*engine.base(), "inspect", "--type", "image", image]


def image_exists_argv(engine: Engine, image: str) -> list[str]:
    """A command that exits 0 only when ``image`` is in the engine's local storage."""
    if engine.name == "buildah":
        return inspect_argv(engine, image)
    return [*engine.base(), "image", "inspect", image]


def entrypoint_of(inspected: str) -> list[str]:
    """The ENTRYPOINT in ``buildah inspect`` output (buildah run does not apply it); [] if none."""
    try:
        config = json.loads(inspected).get("OCIv1", {}).get("config", {})
    except (ValueError, AttributeError):
        return []
    return list(config.get("Entrypoint") or [])


def buildah_run_argvs(engine: Engine, req: RunRequest, entrypoint: Sequence[str],
                      container: str) -> tuple[list[str], list[str], list[str]]:
    """``buildah from`` / ``run`` / ``rm``: predict in a working container named ``container``.

    chroot isolation needs no OCI runtime; it passes no devices, hence CPU only. The image's
    USER and WORKDIR apply; its ENTRYPOINT is given as ``entrypoint`` (see entrypoint_of).
    """
    if req.gpus:
        raise EngineError("buildah runs images with chroot isolation, without GPUs: pass --no-gpus, "
                          "or use docker (--gpus all) or podman (CDI) for a GPU run")
    if not entrypoint:
        raise EngineError(f"{req.image} has no ENTRYPOINT; build it from docker/Dockerfile (invoke docker.build)")
    volumes, task = predict_args(req)
    create = [*engine.base(), "from", "--pull-never", "--name", container, req.image]
    run_ = [*engine.base(), "run", "--isolation", "chroot", *volumes, container, "--", *entrypoint, *task]
    return create, run_, [*engine.base(), "rm", container]


def make_writable_for_image(folder: Path, uid: int = -1) -> str:
    """The output folder must be writable by the image's user: chown as root, else open it up."""
    if folder.stat().st_uid == IMAGE_UID:
        return ""
    if (os.geteuid() if uid < 0 else uid) == 0:
        os.chown(folder, IMAGE_UID, IMAGE_UID)
        return f"{folder}: owner set to uid {IMAGE_UID}, the image's user"
    folder.chmod(0o777)
    return f"{folder}: made writable for all (the image's user is uid {IMAGE_UID})"


def docker_answers(runner: Runner = run) -> bool:
    done = runner(["docker", "info"], timeout=20)
    return bool(done and done.ok)


def overlay_usable(uid: int = -1, filesystems: str = "/proc/filesystems") -> bool:
    """Native overlay needs root and the kernel's overlay filesystem; else buildah falls back to vfs."""
    if (os.geteuid() if uid < 0 else uid) != 0:
        return False
    try:
        return any(line.split()[-1] == "overlay" for line in Path(filesystems).read_text().splitlines() if line.strip())
    except OSError:
        return False


def pick_engine(wanted: str = "", *, storage_driver: str = "", storage_root: str = "", isolation: str = "",
                which: Callable[[str], Optional[str]] = shutil.which, runner: Runner = run,
                overlay: Callable[[], bool] = overlay_usable, for_run: bool = False) -> Engine:
    """The engine to use: ``wanted`` if given, else docker (daemon answering) > buildah > podman.

    Defaults for buildah/podman: storage driver overlay when usable else vfs; isolation chroot
    (works inside containers and CI runners, where the OCI runtime's namespaces may be denied).
    ``for_run`` skips buildah unless asked for (see buildah_run_argvs).
    """
    order = [wanted] if wanted else [e for e in ENGINES if not (for_run and e == "buildah")]
    if wanted and wanted not in ENGINES:
        raise EngineError(f"unknown container engine {wanted!r}; choose one of {', '.join(ENGINES)}")
    tried = []
    for name in order:
        exe = which(name)
        if exe is None:
            tried.append(f"{name}: not installed")
            continue
        if name == "docker":
            if docker_answers(runner):
                return Engine("docker", exe)
            tried.append("docker: installed but `docker info` fails (no daemon reachable)")
            continue
        return Engine(name, exe, storage_driver or ("overlay" if overlay() else "vfs"), storage_root,
                      isolation or "chroot")
    raise EngineError("no usable container engine (" + "; ".join(tried) + ")")


def host_ca_bundle(given: str = "", exists: Callable[[str], bool] = os.path.isfile) -> str:
    """The CA bundle to pass as the `ca` secret: ``given`` ("none" = none), else the host's."""
    if given == "none":
        return ""
    if given:
        if not exists(given):
            raise EngineError(f"--ca {given}: no such file; pass a PEM bundle, or --ca none")
        return given
    return next((path for path in HOST_CA_BUNDLES if exists(path)), "")
