"""The build step: detectron2 + DensePose wheels at the pinned commit, cached, installed, verified.

source -> cache key -> (cache hit | compile into the cache) -> pip install -> verify -> stamp.
The build stamp (``dpdeploy.records.build_stamp``) is written last; a run whose stamp, key and
installed ``_C`` all match is "up-to-date".
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dpdeploy.build import cache as wheelcache
from dpdeploy.build import source as source_mod
from dpdeploy.build import toolchain, wheels
from dpdeploy.build.verification import Verification, verify
from dpdeploy.diagnose.signatures import diagnose
from dpdeploy.envs.site import EnvError, site_packages, torch_info
from dpdeploy.fsutil import sha256_file
from dpdeploy.plan.resolve import Plan
from dpdeploy.records import build_stamp, env_stamp
from dpdeploy.records.build_stamp import BuildStamp
from dpdeploy.records.schema import RecordError
from dpdeploy.records.run import StepResult
from dpdeploy.steps.context import StepContext
from dpdeploy.ui.render import finding_lines


class BuildRefused(Exception):
    """The build cannot start: what failed, why, and the next step."""


def projects(densepose_subdir: str) -> tuple[wheels.Project, ...]:
    return wheels.Project("detectron2", ""), wheels.Project("DensePose", densepose_subdir)


def up_to_date(prefix: Path, key: str) -> BuildStamp | None:
    """The stamp when it names ``key`` and the installed _C / densepose are the ones it recorded."""
    try:
        stamp = build_stamp.read(prefix)
    except RecordError:
        return None   # damaged or from another version: rebuild, which rewrites it
    if stamp is None or stamp.key != key:
        return None
    c_path = Path(stamp.c_path)
    if not c_path.is_file() or sha256_file(c_path) != stamp.c_sha256:
        return None
    if not (site_packages(prefix) / "densepose" / "__init__.py").is_file():
        return None
    return stamp


def diagnosis(log_text: str) -> str:
    """The doctor's findings for a failed build log, as the terminal shows them ("" if none)."""
    return "\n".join(finding_lines(diagnose(log_text)))


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
    except (BuildRefused, EnvError, RecordError, source_mod.SourceError, toolchain.ToolchainError) as exc:
        return StepResult("build", "failed", command, output=str(exc))
    except wheels.BuildError as exc:
        tail = wheels.log_tail(exc.log)
        found = diagnosis(exc.log.read_text(encoding="utf-8", errors="replace"))
        output = f"{exc}; full log: {exc.log}\n--- last lines ---\n{tail}"
        if found:
            output += f"\n--- diagnosis (invoke doctor --log {exc.log}) ---\n{found}"
        return StepResult("build", "failed", command, output=output, detail={"log": str(exc.log)})


def _build(ctx: StepContext, prefix: Path, python: str, command: str, log: Path) -> StepResult:
    plan, settings, echo, matrix = ctx.plan, ctx.settings, ctx.echo, ctx.matrix
    made = env_stamp.read(prefix)
    if made is None:
        raise BuildRefused(f"no environment at {prefix} (missing {env_stamp.FILE}); next: run invoke env first")
    if made.profile != plan.profile:
        raise BuildRefused(f"the env at {prefix} was made for profile {made.profile}, the plan is {plan.profile}; "
                           f"next: run `invoke env` for {plan.profile} or pass --profile {made.profile}")
    home = Path(plan.home)
    src = source_mod.acquire(settings.source, plan.detectron2_repo, plan.detectron2_commit, home / "cache" / "src",
                             settings.allow_unpinned, pin_tree=ctx.matrix.d2_tree)
    detail: dict[str, Any] = {"source": src.to_dict(), "log": str(log), "unpinned": not src.pinned}
    if not src.pinned:
        echo(f"WARNING: building UNPINNED detectron2 ({src.commit or 'unknown commit'}, {src.how}); "
             f"the matrix pins {plan.detectron2_commit}. Recorded in {build_stamp.path(prefix)}.")
    fields = wheelcache.key_fields(src.identity, torch_info(prefix), plan, ctx.facts.machine, src.tree)
    key = wheelcache.cache_key(fields)
    detail["key"] = key
    stamp = up_to_date(prefix, key)
    if stamp:
        return StepResult("build", "up-to-date", command, output=f"{key} installed; archs {stamp.archs_text()}",
                          detail={**detail, "compiled_archs": stamp.compiled_archs})
    root = home / "cache" / "wheels"
    built, damage = wheelcache.check(root, key)
    detail["cache"] = "hit" if built else "damaged" if damage else "miss"
    if damage:
        echo(f"  wheel cache entry DAMAGED: {damage}; rebuilding it")
        detail["cache_damage"] = damage
    if built is None:
        echo(f"  compiling {_describe(plan, settings.source)}, MAX_JOBS={plan.max_jobs}")
        parts = projects(matrix.densepose_subdir)
        built = wheelcache.store(root, key, fields,
                                 lambda out: wheels.compile_wheels(plan, Path(src.path), parts, out, log, echo))
    else:
        echo(f"  wheel cache hit: {root / key}")
    wheels.install_wheels(built, python, log)
    wheels.install_configs(Path(src.path) / matrix.densepose_subdir, prefix)
    checked: Verification = verify(plan, python)
    detail["verification"] = checked.to_dict()
    if not checked.ok:
        return StepResult("build", "failed", command, output="verification failed:\n  " + "\n  ".join(checked.problems),
                          detail=detail)
    c_path = Path(checked.c_path)
    stamp = BuildStamp(commit=src.commit, commit_how=src.how, unpinned=not src.pinned, source=src.spec, key=key,
                       force_cuda=plan.force_cuda, arch_list=fields["arch_list"], compiled_archs=list(checked.archs),
                       c_path=str(c_path), c_sha256=sha256_file(c_path), wheels=[w.name for w in built],
                       key_fields=fields, gpu_check=checked.gpu)
    build_stamp.write(prefix, stamp)
    pin_note = "" if src.pinned else " UNPINNED"
    return StepResult("build", "done", command,
                      output=f"{detail['cache']}: {key}{pin_note}; archs {stamp.archs_text()}",
                      detail={**detail, "compiled_archs": stamp.compiled_archs})
