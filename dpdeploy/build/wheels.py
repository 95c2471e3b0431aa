"""Build torch-extension wheels with an env's pip, and install them into it.

``pip wheel --no-build-isolation --no-deps``: detectron2's setup.py imports torch (with build
isolation it fails with ``No module named 'torch'``), and DensePose's setup.py requires an
unpinned ``detectron2@git+https://...`` that would replace the pinned build.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from dpdeploy import runner
from dpdeploy.build import toolchain
from dpdeploy.fsutil import replace_tree
from dpdeploy.plan.resolve import Plan
from dpdeploy.state import debris

# DensePose's model configs inside the env (its wheel does not carry them): predict and the
# smoke tests find them there when the env travels without the source (a container image).
ENV_CONFIGS = Path("share") / "densepose" / "configs"
# Lines worth showing while compiling: ninja's [n/m] progress and pip's wheel milestones.
PROGRESS = re.compile(r"^\s*(\[\d+/\d+\]|Building wheel|Created wheel|Successfully|ERROR|error:)")


class BuildError(Exception):
    """A build or install command failed; ``log`` is where its output went."""

    def __init__(self, what: str, log: Path):
        super().__init__(what)
        self.log = log


@dataclass(frozen=True)
class Project:
    name: str      # shown in messages
    subdir: str    # folder of its setup.py inside the source tree ("" = the root)


def _progress(echo: Callable[[str], None]) -> Callable[[str], None]:
    def show(line: str) -> None:
        if PROGRESS.match(line):
            echo("    " + (line.strip()[:117] + "..." if len(line.strip()) > 120 else line.strip()))
    return show


def build_wheels(source: Path, projects: Sequence[Project], python: str, env: Mapping[str, str],
                 out: Path, log: Path, echo: Callable[[str], None] = lambda line: None,
                 tmp_root: Path | None = None) -> list[Path]:
    """Copy ``source`` to a private temp tree (in ``tmp_root``: the state root's, which the next
    run sweeps if this one is killed), ``pip wheel`` each project into ``out``.

    The copy keeps the source pristine (detectron2's setup.py writes a symlink and build/
    into its tree) and every build starts clean.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    if tmp_root is not None:
        tmp_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dpdeploy-build-", dir=tmp_root) as tmp:
        tree = Path(tmp) / "src"
        shutil.copytree(source, tree, symlinks=True, ignore=shutil.ignore_patterns(".git"))
        for project in projects:
            echo(f"  building {project.name} wheel (log: {log})")
            argv = [python, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
                    "--disable-pip-version-check", "-v", "-w", str(out), str(tree / project.subdir)]
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(f"$ {' '.join(argv)}\n")
            code = runner.stream(argv, log_path=str(log), env=env, cwd=str(tree), echo=_progress(echo))
            if code != 0:
                raise BuildError(f"pip wheel for {project.name} failed (exit {code})", log)
    return sorted(out.glob("*.whl"))


def install_wheels(wheels: Sequence[Path], python: str, log: Path) -> None:
    """``pip install --no-deps --force-reinstall`` the wheels into ``python``'s env."""
    argv = [python, "-m", "pip", "install", "--no-deps", "--force-reinstall", "--no-index",
            "--disable-pip-version-check", *map(str, wheels)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"$ {' '.join(argv)}\n")
    code = runner.stream(argv, log_path=str(log))
    if code != 0:
        raise BuildError(f"pip install of {', '.join(w.name for w in wheels)} failed (exit {code})", log)


def install_configs(densepose_dir: Path, prefix: Path) -> Path:
    """Copy ``<densepose_dir>/configs`` to ``<prefix>/share/densepose/configs`` (swapped in whole)."""
    configs = densepose_dir / "configs"
    if not configs.is_dir():
        raise BuildError(f"no DensePose configs at {configs}: is this a detectron2 source tree?", configs)
    return replace_tree(configs, prefix / ENV_CONFIGS)


def log_tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def compile_env(plan: Plan, home: Path, base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The compile environment, with ccache wrappers when ccache is installed."""
    ccache = shutil.which("ccache", path=base.get("PATH"))
    cc = cxx = None
    if ccache:
        cc, cxx = toolchain.ccache_wrappers(ccache, plan.toolchain.cc, plan.toolchain.cxx, home / "cache" / "ccache-bin")
    env = toolchain.compile_env(plan, base, cc, cxx)
    if ccache:
        env["CCACHE_BASEDIR"] = str(debris.tmp_root(home))  # builds run in temp copies: hash relative paths
    return env


def compile_wheels(plan: Plan, tree: Path, parts: Sequence[Project], out: Path, log: Path,
                   echo: Callable[[str], None]) -> list[Path]:
    """Toolchain first (CUDA_HOME from the PyPI wheels when planned), then pip wheel each part."""
    if plan.force_cuda and plan.toolchain.cuda_source == "pypi":
        toolchain.assemble_cuda_home(plan.prefix, plan.toolchain.cuda_home)
    env = compile_env(plan, Path(plan.home))
    return build_wheels(tree, parts, str(Path(plan.prefix) / "bin" / "python"), env, out, log, echo,
                        debris.tmp_root(plan.home))
