"""The `build` stage image, keyed by what makes it: an engine edit outside the build reuses it.

Docker's layer cache keys a RUN on every file COPY'd before it, and the env and build stages
need the engine to run, so any engine edit would reinstall the env and recompile detectron2.
`invoke docker.build` instead tags the `build` stage as ``<repo>:<profile>-build-<key>``, where
the key is a digest of the files and build args that stage consumes, and builds `runtime` on it
(``--build-arg BUILT_IMAGE``); only the runtime's own layers (the engine, smoke tests) follow
an edit of the predictor, the report or the CLI.
"""
from __future__ import annotations

import hashlib
from fnmatch import fnmatch
from pathlib import Path
from typing import Mapping, Sequence

REPOSITORY = "localhost/dpdeploy-densepose"
RUNTIME_STAGE = "FROM base AS runtime"   # docker/Dockerfile: what follows is not in the build stage

# Repository files the env, testext and build stages read (bootstrap, locks, matrix, the engine
# that runs `invoke env|testext|build`) ...
BUILD_INPUTS = ("bootstrap.py", "tasks.py", "pyproject.toml", "requirements/*", "env/*", "docker/ca-env.sh",
                "dpdeploy/*")
# ... less the engine's parts a build never runs: they are changed often and reach only runtime.
NOT_BUILD_INPUTS = ("requirements/runtime.*", "dpdeploy/inference/*", "dpdeploy/report/*", "dpdeploy/container/*",
                    "dpdeploy/fleet/*",
                    "dpdeploy/bundle/*", "dpdeploy/cli/predict.py", "dpdeploy/cli/report.py",
                    "dpdeploy/cli/docker.py", "dpdeploy/cli/provision.py", "dpdeploy/cli/bundle.py",
                    "dpdeploy/cli/docs.py", "dpdeploy/cli/docgen.py", "dpdeploy/inenv/predict_worker.py",
                    "dpdeploy/inenv/pipeline.py", "dpdeploy/inenv/video.py", "dpdeploy/inenv/outputs.py",
                    "*/__pycache__/*")
NOT_KEY_ARGS = ("MAX_JOBS", "BUILT_IMAGE")   # how fast it compiles, and the runtime's own input


def is_build_input(rel: str) -> bool:
    """Whether the repository file ``rel`` can change what the build stage holds."""
    return any(fnmatch(rel, p) for p in BUILD_INPUTS) and not any(fnmatch(rel, p) for p in NOT_BUILD_INPUTS)


def build_key(context: Path, files: Sequence[str], args: Mapping[str, str]) -> str:
    """Digest of the build stage's inputs in the staged ``context``: the Dockerfile up to the
    runtime stage, the build inputs among ``files``, the staged detectron2 source and ``args``."""
    digest = hashlib.sha256()
    dockerfile = (context / "docker" / "Dockerfile").read_text(encoding="utf-8")
    digest.update(dockerfile.split(RUNTIME_STAGE, 1)[0].encode())
    source = context / "docker" / "d2src"
    staged = sorted(str(p.relative_to(context)) for p in source.rglob("*") if p.is_file()) if source.is_dir() else []
    for rel in sorted(f for f in files if is_build_input(f)) + staged:
        digest.update(f"\0{rel}\0".encode())
        with open(context / rel, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    for name in sorted(set(args) - set(NOT_KEY_ARGS)):
        digest.update(f"\0{name}={args[name]}".encode())
    return digest.hexdigest()[:16]


def build_tag(profile: str, key: str) -> str:
    """The tag of the build stage image for ``profile`` with inputs ``key``."""
    return f"{REPOSITORY}:{profile}-build-{key}"
