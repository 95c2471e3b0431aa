"""Records made by the real producing steps, for the tests of their consumers.

The env step runs for real with pip standing in (``FakeStream`` writes what the lock would
install: torch's and torchvision's version files, and a ``bin/python`` that answers the one
question the env step and ``invoke verify`` ask it, the installed distributions, with what
was "installed"); the build step runs for real
with the compile, install and in-env verification standing in (they need a C++ build of
detectron2: ``tests/test_build_detectron2.py`` does that part for real from the shared source).
Everything else (stamps, keys, the wheel cache, the run record) is the shipped code.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from dpdeploy.diagnose.drift import applicable, installed
from dpdeploy.envs.lockfile import parse_lock

from dpdeploy.build.verification import Verification
from dpdeploy.plan.resolve import resolve
from dpdeploy.plan.settings import resolve as settings
from dpdeploy.records.build_stamp import BuildStamp
from dpdeploy.steps import build as build_step
from dpdeploy.steps import env as env_step
from dpdeploy.steps.context import StepContext

from .conftest import facts_fixture

PIN = "02b5c4e295e990042a714712c21dc79b731e8833"
TORCH_VERSION_PY = "__version__ = '{torch}'\ncuda: Optional[str] = {cuda}\n"
# The fake env's interpreter: lists the "installed" distributions (drift.LIST_SCRIPT), else fails.
FAKE_PYTHON = """#!/bin/sh
case "$2" in *importlib.metadata*) cat "$(dirname "$0")/../fake-listing.json";; *) exit 1;; esac
"""
LISTING = "fake-listing.json"


def host_marker_env() -> dict:
    """This interpreter's PEP 508 environment (the fake env runs on this host)."""
    return installed(str(Path(sys.executable).parent.parent)).marker_env


def fake_install(prefix: Path, requirements: Path) -> None:
    """What ``pip install -r requirements`` leaves in the fake env's listing."""
    listing = prefix / LISTING
    data = json.loads(listing.read_text()) if listing.exists() else {"env": host_marker_env(), "dists": []}
    pins = applicable(parse_lock(requirements.read_text(), str(requirements)), data["env"])
    dists = {n: v for n, v in data["dists"] if n not in pins}
    dists |= {n: sorted(v)[0] for n, v in pins.items() if v}
    data["dists"] = sorted(dists.items())
    listing.write_text(json.dumps(data))


def drift(prefix: Path, name: str, version: str | None) -> None:
    """`pip install name==version` (None: uninstall) by hand in the fake env."""
    listing = prefix / LISTING
    data = json.loads(listing.read_text())
    dists = {n: v for n, v in data["dists"] if n != name} | ({name: version} if version else {})
    data["dists"] = sorted(dists.items())
    listing.write_text(json.dumps(data))


def context(matrix, tmp_path: Path, dry: bool = False, facts: str = "nogpu", **values):
    """(StepContext, lines echoed): home and prefix under ``tmp_path``. The matrix pins no tree
    hash here: the fake source trees (``source_tree``) only declare the pinned commit."""
    matrix = dataclasses.replace(matrix, d2_tree="")
    values = {"home": str(tmp_path / "home"), "prefix": str(tmp_path / "env"), **values}
    s = settings(values, env={})
    found = facts_fixture(facts)
    lines: list[str] = []
    return StepContext(resolve(found, matrix, s), found, s, matrix, None, dry, lines.append), lines


class FakeStream:
    """Stands in for pip in the env step: records argv; venv makes bin/python, pip installs torch."""

    def __init__(self, rc: int = 0, fail_on: str = "pip", torch: str = "2.14.1+cu130", cuda: str = "13.0",
                 torchvision: str = "0.29.1"):
        self.calls: list[list[str]] = []
        self.requirements: list[str] = []   # the text of each -r file pip was given
        self.rc, self.fail_on, self.torch, self.cuda, self.torchvision = rc, fail_on, torch, cuda, torchvision

    def __call__(self, argv, log_path, env=None, echo=print, cwd=None):
        self.calls.append(list(argv))
        if "venv" in argv:
            prefix = Path(argv[-1])
            assert (prefix / env_step.MARKER).is_file(), "the marker must be written before the venv"
            (prefix / "bin").mkdir(parents=True, exist_ok=True)
            (prefix / "bin" / "python").write_text(FAKE_PYTHON)
            (prefix / "bin" / "python").chmod(0o755)
        if "uninstall" in argv:
            for name in argv[argv.index("-y") + 2:]:   # -y --disable-pip-version-check NAME...
                drift(Path(argv[0]).parent.parent, name, None)
            return 0
        if "-r" in argv:
            self.requirements.append(Path(argv[argv.index("-r") + 1]).read_text())
        if self.fail_on in argv and self.rc:
            return self.rc
        if "pip" in argv:
            fake_install(Path(argv[0]).parent.parent, Path(argv[argv.index("-r") + 1]))
            site = Path(argv[0]).parent.parent / "lib" / "python3.11" / "site-packages"
            (site / "torch").mkdir(parents=True, exist_ok=True)
            cuda = f"'{self.cuda}'" if self.cuda else "None"
            (site / "torch" / "version.py").write_text(TORCH_VERSION_PY.format(torch=self.torch, cuda=cuda))
            (site / "torchvision").mkdir(exist_ok=True)
            (site / "torchvision" / "version.py").write_text(f"__version__ = '{self.torchvision}'\n")
        echo("Collecting numpy==2.2.6 (from -r x (line 3))")
        return 0


def make_env(matrix, tmp_path: Path, monkeypatch, **values):
    """Run the real env step (pip standing in); returns its StepResult."""
    monkeypatch.setattr(env_step, "stream", FakeStream())
    ctx, _ = context(matrix, tmp_path, **values)
    return env_step.run(ctx)


def source_tree(tmp_path: Path, commit: str = PIN) -> Path:
    """A source folder carrying the commit marker the source module reads."""
    tree = tmp_path / "src"
    tree.mkdir(exist_ok=True)
    (tree / ".dpdeploy-commit").write_text(commit)
    return tree


def make_build(matrix, tmp_path: Path, monkeypatch, archs=("sm_90", "compute_90"), **values):
    """Run the real build step with compiling, installing and the in-env check standing in."""
    ctx, lines = context(matrix, tmp_path, source=str(source_tree(tmp_path)), **values)
    site = Path(ctx.plan.prefix) / "lib" / "python3.11" / "site-packages"
    c_so = site / "detectron2" / "_C.so"

    def compile_wheels(plan, tree, parts, out, log, echo):
        (out / "detectron2-0.6-cp311-cp311-linux_x86_64.whl").write_bytes(b"wheel")

    def install_wheels(wheels, python, log):
        c_so.parent.mkdir(parents=True, exist_ok=True)
        c_so.write_bytes(b"compiled _C")
        (site / "densepose").mkdir(exist_ok=True)
        (site / "densepose" / "__init__.py").write_text("")

    monkeypatch.setattr(build_step.wheels, "compile_wheels", compile_wheels)
    monkeypatch.setattr(build_step.wheels, "install_wheels", install_wheels)
    monkeypatch.setattr(build_step.wheels, "install_configs", lambda src, prefix: prefix)
    shown = list(archs) if ctx.plan.force_cuda else []
    monkeypatch.setattr(build_step, "verify", lambda plan, python: Verification(str(c_so), shown))
    return build_step.run(ctx), ctx, lines


def stamp(compiled_archs=("sm_90",), force_cuda: bool = True, commit: str = PIN) -> BuildStamp:
    """A build stamp as the build step makes one, for the pure checks' tables."""
    return BuildStamp(commit=commit, commit_how="test", unpinned=False, source="test", key="k",
                      force_cuda=force_cuda, arch_list="", compiled_archs=list(compiled_archs), c_path="", c_sha256="")
