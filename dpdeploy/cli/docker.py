"""`invoke docker.*`: render the Dockerfile's build args, build the image, run predict in it."""
from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from invoke import Collection, Exit, task

from dpdeploy import paths
from dpdeploy.container import baseimage, context as buildcontext, engines as containers, dockerfile, sizes, stages
from dpdeploy.ui import render
from dpdeploy.container.engines import BuildRequest, Engine, EngineError, RunRequest
from dpdeploy.fsutil import atomic_write_text
from dpdeploy.records.run import RunRecord
from dpdeploy.runner import run as run_cmd, stream
from dpdeploy.build.source import SourceError
from dpdeploy.inference.weights import cache_dir
from dpdeploy.cli import common

ENGINE_HELP = {
    "engine": "docker, buildah or podman (default: docker when `docker info` answers, else buildah, else podman).",
    "storage_driver": "buildah/podman --storage-driver (default: overlay when usable as root, else vfs).",
    "storage_root": "buildah/podman --root: where images are stored (default: their own).",
    "isolation": "buildah/podman --isolation for RUN steps (default: chroot).",
}


def _engine(wanted: str, storage_driver: str, storage_root: str, isolation: str, for_run: bool = False) -> Engine:
    try:
        return containers.pick_engine(wanted, storage_driver=storage_driver, storage_root=storage_root,
                                      isolation=isolation, for_run=for_run)
    except EngineError as exc:
        print(render.error_text(exc) + "\n  next: install one (Debian/Ubuntu: apt-get install -y buildah podman)",
              file=sys.stderr)
        raise Exit(code=2) from None


def _fail(exc: Exception, code: int = 2) -> Exit:
    print(render.error_text(exc), file=sys.stderr)
    return Exit(code=code)


@task(help={"check": "Only compare: exit 1 when docker/Dockerfile's build args differ from env/matrix.yml."})
def render_args(c, check: bool = False) -> None:
    """Render docker/Dockerfile's ARG defaults from env/matrix.yml (BASE_IMAGE, PROFILE, versions, archs)."""
    with common.user_errors():
        args = dockerfile.build_args(common.load_matrix(common.settings(c)))
    text = dockerfile.DOCKERFILE.read_text(encoding="utf-8")
    diff = dockerfile.drift(text, args)
    if check:
        print("\n".join(diff) if diff else "docker/Dockerfile build args match env/matrix.yml")
        if diff:
            raise Exit(code=1)
        return
    if diff:
        atomic_write_text(dockerfile.DOCKERFILE, dockerfile.render(text, args))
    print(f"{dockerfile.DOCKERFILE}: {'updated' if diff else 'already up to date'}")


@task(help={
    "profile": "Profile to build (default: docker.default_profile in env/matrix.yml).",
    "arch_list": "TORCH_CUDA_ARCH_LIST for the build stage (default: the profile's list in the matrix).",
    "source": "detectron2 source for an offline build: a local clone (the pinned commit is archived), "
              "an archive, or a directory (default: cloned at the pin inside the image).",
    "target": "Stage to build: env, build, testext or runtime.",
    "base_image": "BASE_IMAGE override (default: the matrix's image for the profile), e.g. localhost/debian:12.",
    "tag": "Image tag (default: localhost/dpdeploy-densepose:<profile>-<target>).",
    "max_jobs": "MAX_JOBS for the compile inside the image (default: the plan's, sized from this host's RAM and cores).",
    "ca": "CA bundle passed as the build secret `ca` for pip (default: the host's bundle; 'none' = none).",
    **ENGINE_HELP,
    "dry": "Print the engine and the command line, stage nothing, build nothing.",
    "json": "Print the result as JSON.",
    "no_wait": common.NO_WAIT_HELP,
})
def build(c, profile: str = "", arch_list: str = "", source: str = "", target: str = "runtime", base_image: str = "",
          tag: str = "", max_jobs: int = 0, ca: str = "", engine: str = "", storage_driver: str = "",
          storage_root: str = "", isolation: str = "", dry: bool = False, json: bool = False,
          no_wait: bool = False) -> None:
    """Build docker/Dockerfile with docker buildx, buildah or podman from the matrix's pins."""
    with common.user_errors(json):
        s = common.settings(c)
        matrix = common.load_matrix(s)
        args = dockerfile.build_args(matrix, profile or None)
    if target not in ("env", "build", "testext", "runtime"):
        raise _fail(ValueError(f"--target {target}: choose env, build, testext or runtime"))
    args.update({k: v for k, v in (("BASE_IMAGE", base_image), ("TORCH_CUDA_ARCH_LIST", arch_list)) if v})
    with common.user_errors(json):
        args["MAX_JOBS"] = str(max_jobs or common.plan(s)[1].max_jobs)
    eng = _engine(engine, storage_driver, storage_root, isolation)
    try:
        bundle = containers.host_ca_bundle(ca)
    except EngineError as exc:
        raise _fail(exc) from None
    tag = tag or f"{stages.REPOSITORY}:{args['PROFILE']}-{target}"
    home = s.home_path
    secrets = {containers.CA_SECRET_ID: bundle} if bundle else {}
    # the context folder and the run record live in the state root: under its lock (a dry run changes nothing)
    with common.user_errors(json), common.state_lock(s, no_wait=no_wait, dry=dry, quiet=json):
        staging = (Path(tempfile.mkdtemp(prefix="context-", dir=_mkdir(home / "cache" / "docker"))) if not dry
                   else Path("<context>"))
        built: list[dict] = []
        try:
            if source and not dry:
                args["D2_SOURCE"] = buildcontext.stage_source(source, matrix.d2_commit, staging)
            elif source:
                args["D2_SOURCE"] = "/src/<staged source>"
            if dry:
                if target == "runtime":
                    args["BUILT_IMAGE"] = stages.build_tag(args["PROFILE"], "<key>")
                    built.append({"target": "build", "tag": args["BUILT_IMAGE"], "status": "planned (skipped when "
                                  "that image exists)", "command": containers.build_argv(eng, _request(
                                      staging, "build", args["BUILT_IMAGE"], args, secrets))})
                argv = containers.build_argv(eng, _request(staging, target, tag, args, secrets))
                _report({"engine": eng.name, "command": argv, "tag": tag, "status": "planned", "stages": built}, json)
                return
            files = buildcontext.stage_repo(paths.ROOT, staging)
            record = RunRecord.create(home, "docker-build")
            log = record.log_path("docker-build")
            log.parent.mkdir(parents=True, exist_ok=True)
            echo = (lambda line: None) if json else print
            if not json:
                print(f"==> {eng.name}: {tag} (target {target}, profile {args['PROFILE']}, base {args['BASE_IMAGE']}); "
                      f"context: {len(files)} files; log: {log}")
            rc = 0
            if target == "runtime":
                rc, stage = _build_stage(eng, staging, files, args, secrets, log, echo)
                built.append(stage)
                args["BUILT_IMAGE"] = stage["tag"]
            argv = containers.build_argv(eng, _request(staging, target, tag, args, secrets))
            start = time.monotonic()
            if rc == 0:
                rc = stream(argv, log_path=str(log), echo=echo)
            seconds = round(time.monotonic() - start, 1)
        except (SourceError, OSError) as exc:
            raise _fail(exc) from None
        finally:
            if not dry:
                shutil.rmtree(staging, ignore_errors=True)
        result = {"engine": eng.name, "command": argv, "tag": tag, "target": target, "build_args": args,
                  "stages": built, "seconds": seconds, "size": image_size(eng, tag) if rc == 0 else "", "log": str(log),
                  "status": "done" if rc == 0 else "failed", "returncode": rc}
        record.write("result", result)
        _report(result, json)
        if rc != 0:
            raise Exit(code=1)


def _request(staging: Path, target: str, tag: str, args: dict, secrets: dict) -> BuildRequest:
    return BuildRequest(str(staging), str(staging / "docker" / "Dockerfile"), tag, target, dict(args), secrets)


def _build_stage(eng: Engine, staging: Path, files: list[str], args: dict, secrets: dict, log: Path,
                 echo) -> tuple[int, dict]:
    """The `build` stage image keyed by its inputs (container/stages.py): reused when present."""
    built = stages.build_tag(args["PROFILE"], stages.build_key(staging, files, args))
    exists = run_cmd(containers.image_exists_argv(eng, built), timeout=120)
    if exists is not None and exists.ok:
        echo(f"==> build stage: reusing {built} (its inputs are unchanged)")
        return 0, {"target": "build", "tag": built, "status": "reused", "seconds": 0.0}
    echo(f"==> build stage: {built} (env, detectron2 and DensePose wheels)")
    argv = containers.build_argv(eng, _request(staging, "build", built, args, secrets))
    start = time.monotonic()
    rc = stream(argv, log_path=str(log), echo=echo)
    return rc, {"target": "build", "tag": built, "status": "built" if rc == 0 else "failed", "command": argv,
                "seconds": round(time.monotonic() - start, 1)}


def _mkdir(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def image_size(eng: Engine, tag: str) -> str:
    """The image's size as the engine reports it ("" when it cannot say)."""
    if eng.name == "buildah":
        argv = [*eng.base(), "images", "--noheading", "--format", "{{.Size}}", tag]
    else:
        argv = [*eng.base(), "image", "inspect", "--format", "{{.Size}}", tag]
    done = run_cmd(argv, timeout=120)
    return done.stdout.strip() if done and done.ok else ""


def _report(result: dict, json: bool) -> None:
    if json:
        print(render.to_json(result))
        return
    for stage in result.get("stages", []):
        print(f"  stage {stage['target']}: {stage['status']} {stage['tag']}"
              + (f" in {stage['seconds']} s" if stage.get("seconds") else ""))
    print(f"{result['engine']}: {result['status']}" + (f" in {result['seconds']} s" if "seconds" in result else ""))
    print("  " + shlex.join(result["command"]))
    if result.get("size"):
        print(f"  image {result['tag']}: {result['size']}")
    if result.get("log"):
        print(f"  log: {result['log']}")


@task(help={
    "images": "Image files or folders to run DensePose on, comma-separated (mounted read-only).",
    "out": "Host folder for the outputs (mounted at /data/out; default ./out/docker).",
    "tag": "Image to run (default: localhost/dpdeploy-densepose:<default profile>-runtime).",
    "no_gpus": "Do not pass GPUs through (CPU run; required with --engine buildah).",
    "weights": "Checkpoint file, or 'synthetic' for a pipeline check (default: the `invoke weights` cache "
               "of this host, mounted read-only).",
    "engine": "docker or podman (default: docker when `docker info` answers, else podman); buildah runs "
              "the image in a working container with chroot isolation, where no OCI runtime is allowed.",
    **{k: v for k, v in ENGINE_HELP.items() if k not in ("isolation", "engine")},
    "dry": "Print the command line, run nothing.",
})
def run(c, images: str, out: str = "out/docker", tag: str = "", no_gpus: bool = False, weights: str = "",
        engine: str = "", storage_driver: str = "", storage_root: str = "", dry: bool = False) -> None:
    """Run `invoke predict` in the image on host images, GPUs passed through (--gpus all / CDI)."""
    with common.user_errors():
        s = common.settings(c)
        args = dockerfile.build_args(common.load_matrix(s))
    eng = _engine(engine, storage_driver, storage_root, "", for_run=True)
    inputs = [Path(p).expanduser().resolve() for p in images.split(",") if p]
    missing = [str(p) for p in inputs if not p.exists()]
    if not inputs or missing:
        raise _fail(FileNotFoundError(f"no such input: {', '.join(missing) or '(none given)'}"))
    if weights and weights != containers.SYNTHETIC:
        if not Path(weights).expanduser().is_file():
            raise _fail(FileNotFoundError(f"--weights {weights}: no such file (or pass 'synthetic')"))
        weights = str(Path(weights).expanduser().resolve())
    elif not weights:
        weights = str(cache_dir(s.home_path))
        if not Path(weights).is_dir():
            raise _fail(FileNotFoundError(f"no weights cache at {weights}: run `invoke weights` first, or pass "
                                          "--weights FILE, or --weights synthetic for a pipeline check"))
    out_dir = Path(out).expanduser().resolve()
    req = RunRequest(tag or f"localhost/dpdeploy-densepose:{args['PROFILE']}-runtime", [str(p) for p in inputs],
                     str(out_dir), gpus=not no_gpus, weights=weights)
    try:
        steps = _buildah_steps(eng, req) if eng.name == "buildah" else [containers.run_argv(eng, req)]
    except EngineError as exc:
        raise _fail(exc) from None
    for argv in steps:
        print(shlex.join(argv))
    if dry:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    note = containers.make_writable_for_image(out_dir)
    if note:
        print(note)
    log = str(out_dir / "docker-run.log")
    if eng.name != "buildah":
        rc = stream(steps[0], log_path=log, echo=print)
        if rc != 0 and eng.name == "podman":
            print("docker.run: podman failed; where its OCI runtime is denied (crun: `setrlimit ... Operation not "
                  "permitted`, e.g. inside a container) `--engine buildah --no-gpus` runs the image without one",
                  file=sys.stderr)
    else:
        create, run_, remove = steps
        if stream(create, log_path=log, echo=print) != 0:
            raise _fail(EngineError(f"buildah from {req.image} failed; see {log}"))
        try:
            rc = stream(run_, log_path=log, echo=print)
        finally:
            run_cmd(remove, timeout=120)
    if rc != 0:
        raise Exit(code=rc)


def _buildah_steps(eng: Engine, req: RunRequest) -> tuple[list[str], list[str], list[str]]:
    """buildah from/run/rm for ``req``, with the ENTRYPOINT read from the image itself."""
    done = run_cmd(containers.inspect_argv(eng, req.image), timeout=120)
    if done is None or not done.ok:
        why = done.stderr.strip().splitlines()[-1] if done and done.stderr.strip() else "no answer"
        raise EngineError(f"cannot inspect image {req.image} ({why}); next: invoke docker.build, or --tag IMAGE")
    return containers.buildah_run_argvs(eng, req, containers.entrypoint_of(done.stdout), f"dpdeploy-run-{os.getpid()}")


@task(help={"tag": "Tag for the image (default localhost/debian:12).",
            "cache": "Folder for the cached debootstrap tarball (default /var/tmp/dpdeploy).",
            "storage_driver": ENGINE_HELP["storage_driver"], "storage_root": ENGINE_HELP["storage_root"],
            "dry": "Print what would be made, change nothing."})
def base_image(c, tag: str = baseimage.TAG, cache: str = str(baseimage.CACHE), storage_driver: str = "",
               storage_root: str = "", dry: bool = False) -> None:
    """A local Debian 12 base image without a registry: debootstrap minbase, imported with podman."""
    eng = _engine("podman", storage_driver, storage_root, "")
    tarball = baseimage.tarball_path(Path(cache))
    if dry:
        print(shlex.join(baseimage.debootstrap_argv(Path(cache) / "rootfs")) + f"  # skipped when {tarball} exists")
        print(shlex.join(baseimage.import_argv(eng, tarball, tag)))
        return
    try:
        print(baseimage.ensure(eng, tag, Path(cache), Path(cache) / "base-image.log"))
    except EngineError as exc:
        raise _fail(exc, 1) from None


@task(help={
    "tag": "Image to weigh (default: localhost/dpdeploy-densepose:<default profile>-runtime).",
    "top": "How many of each venv's largest distributions to list (default 15; --json lists all).",
    **{k: v for k, v in ENGINE_HELP.items() if k != "isolation"},
    "json": "Print the layers and every distribution's size as JSON.",
})
def size(c, tag: str = "", top: int = 15, engine: str = "", storage_driver: str = "", storage_root: str = "",
         json: bool = False) -> None:
    """What an image weighs: its layers by size and the largest Python distributions in its env and venv."""
    with common.user_errors(json):
        s = common.settings(c)
        profile = dockerfile.build_args(common.load_matrix(s), None)["PROFILE"]
    eng = _engine(engine, storage_driver, storage_root, "")
    try:
        measured = sizes.measure(eng, tag or f"{stages.REPOSITORY}:{profile}-runtime")
    except EngineError as exc:
        raise _fail(exc) from None
    print(render.to_json(measured.to_dict()) if json else sizes.text(measured, top))


ns = Collection("docker")
ns.add_task(render_args, "render")
ns.add_task(build)
ns.add_task(run)
ns.add_task(size)
ns.add_task(base_image)
