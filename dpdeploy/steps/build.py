"""The build step: detectron2 + DensePose wheels at the pinned commit, cached, installed, verified.

source -> cache key -> (cache hit | compile into the cache) -> pip install -> verify -> stamp.
The stamp ``<prefix>/.dpdeploy-build.json`` is written last; a run whose stamp, key and
installed ``_C`` all match is "up-to-date".
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from dpdeploy.build import wheels as builder, source as source_mod, toolchain, cache as wheelcache
from dpdeploy.fsutil import atomic_write_json, read_json, sha256_file
from dpdeploy.plan.matrix import load as load_matrix
from dpdeploy.plan.resolve import Plan
from dpdeploy.build.verification import Verification, verify
from dpdeploy.steps import StepContext, StepResult

ENV_STAMP = ".dpdeploy-env.json"
BUILD_STAMP = ".dpdeploy-build.json"


class BuildRefused(Exception):
    """The build cannot start: what failed, why, and the next step."""


def projects(densepose_subdir: str) -> tuple[builder.Project, ...]:
    return builder.Project("detectron2", ""), builder.Project("DensePose", densepose_subdir)


def env_info(prefix: str | Path) -> dict[str, str]:
    """Python major.minor and torch's version / CUDA version, read from the env's files."""
    site = toolchain.site_packages(prefix)
    version_py = site / "torch" / "version.py"
    if not version_py.is_file():
        raise BuildRefused(f"torch is not installed in {prefix} (no {version_py}); next: run `invoke env` first")
    text = version_py.read_text(encoding="utf-8")
    torch_version = re.search(r"^__version__\s*=\s*'([^']+)'", text, re.M)
    cuda = re.search(r"^cuda(?::[^=]*)?=\s*(?:'([^']*)'|None)", text, re.M)
    return {"python": site.parent.name.replace("python", ""),
            "torch": torch_version.group(1) if torch_version else "unknown",
            "torch_cuda": (cuda.group(1) or "") if cuda else ""}


def key_fields(identity: str, info: dict[str, str], plan: Plan, machine: str, tree: str = "") -> dict[str, Any]:
    """What makes two builds' wheels interchangeable (wheelcache adds its recipe version): the
    source's commit (or identity) and a hash of its tree's content, torch, machine, archs."""
    return {"source": identity, "tree": tree, **info, "machine": machine, "force_cuda": plan.force_cuda,
            "arch_list": plan.torch_cuda_arch_list if plan.force_cuda else ""}


def compile_env(plan: Plan, home: Path, base=os.environ) -> dict[str, str]:
    """The compile environment, with ccache wrappers when ccache is installed."""
    ccache = shutil.which("ccache", path=base.get("PATH"))
    cc = cxx = None
    if ccache:
        cc, cxx = toolchain.ccache_wrappers(ccache, plan.toolchain.cc, plan.toolchain.cxx,
                                            home / "cache" / "ccache-bin")
    env = toolchain.compile_env(plan, base, cc, cxx)
    if ccache:
        env["CCACHE_BASEDIR"] = tempfile.gettempdir()  # builds run in temp copies: hash relative paths
    return env


def compile_wheels(plan: Plan, tree: Path, parts: Sequence[builder.Project], out: Path, log: Path,
                   echo: Callable[[str], None]) -> list[Path]:
    """Toolchain first (CUDA_HOME from the PyPI wheels when planned), then pip wheel each part."""
    if plan.force_cuda and plan.toolchain.cuda_source == "pypi":
        toolchain.assemble_cuda_home(plan.prefix, plan.toolchain.cuda_home)
    env = compile_env(plan, Path(plan.home))
    return builder.build_wheels(tree, parts, str(Path(plan.prefix) / "bin" / "python"), env, out, log, echo)


def up_to_date(prefix: Path, key: str) -> Optional[dict]:
    """The stamp when it names ``key`` and the installed _C / densepose are the ones it recorded."""
    stamp = read_json(prefix / BUILD_STAMP)
    if not stamp or stamp.get("key") != key:
        return None
    c_path = Path(stamp.get("c_path", ""))
    if not c_path.is_file() or sha256_file(c_path) != stamp.get("c_sha256"):
        return None
    if not (toolchain.site_packages(prefix) / "densepose" / "__init__.py").is_file():
        return None
    return stamp


def diagnose(log_text: str) -> str:
    """The doctor's diagnosis of a failed build log, when that module exists and recognises it."""
    try:
        from dpdeploy.diagnose import signatures as doctor  # type: ignore[attr-defined]
    except ImportError:
        return ""
    found = doctor.diagnose(log_text)
    items = found if isinstance(found, (list, tuple)) else [found]
    return "\n".join(str(item) for item in items if item)


def _log_path(ctx: StepContext) -> Path:
    if ctx.record is not None:
        return ctx.record.log_path("build")
    return Path(ctx.plan.home) / "logs" / f"build-{time.strftime('%Y%m%d-%H%M%S')}.log"


def _describe(plan: Plan, spec: str) -> str:
    what = f"detectron2 {plan.detectron2_commit[:12]} + DensePose from {spec or plan.detectron2_repo}"
    if plan.force_cuda:
        return (f"{what}, FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST={plan.torch_cuda_arch_list!r} "
                f"CUDA_HOME={plan.toolchain.cuda_home}")
    return f"{what}, CPU only"


def run(ctx: StepContext) -> StepResult:
    plan, settings = ctx.plan, ctx.settings
    prefix, python = Path(plan.prefix), str(Path(plan.prefix) / "bin" / "python")
    command = f"{python} -m pip wheel --no-build-isolation --no-deps <detectron2> <detectron2>/projects/DensePose"
    try:
        toolchain.compile_env(plan, {})  # refuses an empty arch list before anything changes
    except toolchain.ToolchainError as exc:
        return StepResult("build", "failed", command, output=str(exc))
    if ctx.dry:
        return StepResult("build", "planned", command, output=_describe(plan, settings.source))
    log = _log_path(ctx)
    try:
        return _build(ctx, prefix, python, command, log)
    except (BuildRefused, source_mod.SourceError, toolchain.ToolchainError) as exc:
        return StepResult("build", "failed", command, output=str(exc))
    except builder.BuildError as exc:
        tail = builder.log_tail(exc.log)
        diagnosis = diagnose(exc.log.read_text(encoding="utf-8", errors="replace"))
        output = f"{exc}; full log: {exc.log}\n--- last lines ---\n{tail}"
        if diagnosis:
            output += f"\n--- diagnosis ---\n{diagnosis}"
        return StepResult("build", "failed", command, output=output, detail={"log": str(exc.log)})


def _build(ctx: StepContext, prefix: Path, python: str, command: str, log: Path) -> StepResult:
    plan, settings, echo = ctx.plan, ctx.settings, ctx.echo
    env_stamp = read_json(prefix / ENV_STAMP)
    if env_stamp is None:
        raise BuildRefused(f"no environment at {prefix} (missing {ENV_STAMP}); next: run invoke env first")
    if env_stamp.get("profile", plan.profile) != plan.profile:
        raise BuildRefused(f"the env at {prefix} was made for profile {env_stamp['profile']}, "
                           f"the plan is {plan.profile}; "
                           f"next: run `invoke env` for {plan.profile} or pass --profile {env_stamp['profile']}")
    matrix = load_matrix(settings.matrix)
    home = Path(plan.home)
    src = source_mod.acquire(settings.source, plan.detectron2_repo, plan.detectron2_commit, home / "cache" / "src",
                             settings.allow_unpinned)
    detail: dict[str, Any] = {"source": src.to_dict(), "log": str(log), "unpinned": not src.pinned}
    if not src.pinned:
        echo(f"WARNING: building UNPINNED detectron2 ({src.commit or 'unknown commit'}, {src.how}); "
             f"the matrix pins {plan.detectron2_commit}. Recorded in {prefix / BUILD_STAMP}.")
    fields = key_fields(src.identity, env_info(prefix), plan, ctx.facts.machine, src.tree)
    key = wheelcache.cache_key(fields)
    detail["key"] = key
    stamp = up_to_date(prefix, key)
    if stamp:
        archs = ", ".join(stamp["archs"]) or "none (CPU)"
        return StepResult("build", "up-to-date", command, output=f"{key} installed; archs {archs}",
                          detail={**detail, "archs": stamp["archs"]})
    root = home / "cache" / "wheels"
    wheels = wheelcache.lookup(root, key)
    detail["cache"] = "hit" if wheels else "miss"
    if wheels is None:
        echo(f"  compiling {_describe(plan, settings.source)}, MAX_JOBS={plan.max_jobs}")
        parts = projects(matrix.densepose_subdir)
        wheels = wheelcache.store(root, key, fields,
                                  lambda out: compile_wheels(plan, Path(src.path), parts, out, log, echo))
    else:
        echo(f"  wheel cache hit: {root / key}")
    builder.install_wheels(wheels, python, log)
    builder.install_configs(Path(src.path) / matrix.densepose_subdir, prefix)
    checked: Verification = verify(plan, python)
    detail["verification"] = checked.to_dict()
    if not checked.ok:
        return StepResult("build", "failed", command, output="verification failed:\n  " + "\n  ".join(checked.problems),
                          detail=detail)
    c_path = Path(checked.c_path)
    atomic_write_json(prefix / BUILD_STAMP, {
        "commit": src.commit, "commit_how": src.how, "unpinned": not src.pinned, "source": src.spec,
        "key": key, "key_fields": fields, "arch_list": fields["arch_list"], "archs": checked.archs,
        "wheels": [w.name for w in wheels], "c_path": str(c_path), "c_sha256": sha256_file(c_path),
        "gpu_check": checked.gpu,
    })
    pin_note = "" if src.pinned else " UNPINNED"
    return StepResult("build", "done", command,
                      output=f"{detail['cache']}: {key}{pin_note}; archs {', '.join(checked.archs) or 'none (CPU)'}",
                      detail={**detail, "archs": checked.archs})
