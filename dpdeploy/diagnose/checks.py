"""Live checks of the host and the deployed env, from facts + plan (``invoke doctor``).

Each check returns a ``Check``: ok / warn / fail / skip, with what, why and the next command.
Commands run only through the injected runner; a missing env is a finding, never a crash.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from dpdeploy.diagnose.signatures import diagnose
from dpdeploy.host.facts import Facts, Gpu
from dpdeploy.plan.archs import covers, parse_archs
from dpdeploy.plan.driver import new_enough
from dpdeploy.plan.matrix import Matrix, version_tuple
from dpdeploy.plan.resolve import Plan, max_jobs_for
from dpdeploy.host.probe import parse_nvcc_version
from dpdeploy.records import build_stamp
from dpdeploy.records.build_stamp import BuildStamp
from dpdeploy.records.schema import RecordError
from dpdeploy.runner import Runner, run

STATUSES = ("ok", "warn", "fail", "skip")
IMPORT_PROBE = "import detectron2, densepose; print(detectron2.__version__)"


@dataclass(frozen=True)
class Check:
    name: str
    status: str                   # one of STATUSES
    what: str                     # one line: what was found
    why: str = ""                 # why it matters / what it was compared with
    next: str = ""                # the next command to run ("" when nothing to do)
    details: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def env_python(prefix: str) -> Path:
    return Path(prefix) / "bin" / "python"


def env_missing(name: str, prefix: str, status: str = "warn") -> Check:
    return Check(name, status, f"env not created: no {env_python(prefix)}",
                 "the deployed environment is checked only once it exists", "invoke env")


def read_build_stamp(prefix: str) -> tuple[Optional[BuildStamp], list[Check]]:
    """The build step's stamp (None before a build), and a failed check when it is unreadable."""
    try:
        return build_stamp.read(prefix), []
    except RecordError as err:
        return None, [Check("build-stamp", "fail", str(err), "the build stamp records what was compiled",
                            build_stamp.NEXT)]


# --- compiled archs vs GPUs (pure) ----------------------------------------------------------

def arch_check(stamp: Optional[BuildStamp], gpus: Iterable[Gpu], is_cuda: bool, name: str = "compiled-archs") -> Check:
    """Do the stamp's compiled archs cover every GPU (the rule: dpdeploy/plan/archs.py)?"""
    gpus = list(gpus)
    built = f"compiled archs: {stamp.archs_text()}" if stamp else "detectron2 not built yet"
    if not is_cuda:
        return Check(name, "ok", f"CPU profile ({built}): no CUDA kernels to match")
    if not gpus:
        return Check(name, "ok", f"no GPU on this host ({built}): nothing to match the compiled archs against")
    if stamp is None:
        return Check(name, "skip", f"no build stamp ({build_stamp.FILE}): detectron2 not built yet", next="invoke build")
    if not stamp.force_cuda:
        return Check(name, "fail", "detectron2 was built without CUDA (a CPU build) on a host with GPUs",
                     "DensePose runs on the CPU only; CUDA calls fail with 'not compiled with GPU support'",
                     "invoke plan && invoke build")
    archs = parse_archs(stamp.compiled_archs)
    missing = [g for g in gpus if not covers(archs, g.compute_capability)]
    shown = stamp.archs_text()
    if missing:
        names = ", ".join(f"GPU {g.index} {g.name} (sm_{g.compute_capability.replace('.', '')})" for g in missing)
        return Check(name, "fail", f"_C has no kernels for {names}",
                     f"compiled archs: {shown}; CUDA calls will fail with 'no kernel image is available'",
                     "invoke plan && invoke build")
    return Check(name, "ok", f"_C archs ({shown}) cover every GPU "
                             f"({', '.join('sm_' + g.compute_capability.replace('.', '') for g in gpus)})")


# --- the live checks ------------------------------------------------------------------------

def driver_check(facts: Facts, plan: Plan, matrix: Matrix) -> Check:
    profile = matrix.profile(plan.profile)
    if not profile.is_cuda:
        return Check("driver", "ok", f"{plan.profile} is a CPU profile: no NVIDIA driver needed")
    if not facts.driver_version:
        return Check("driver", "warn", "no NVIDIA driver found",
                     f"{plan.profile} builds CUDA kernels, but DensePose runs on the CPU here",
                     "invoke facts")
    if not new_enough(facts.driver_version, profile.min_driver):
        return Check("driver", "fail", f"driver {facts.driver_version} < {profile.min_driver}",
                     f"{plan.profile} (CUDA {profile.cuda}) needs driver >= {profile.min_driver} (env/matrix.yml)",
                     "upgrade the NVIDIA driver, or plan another profile: invoke plan --profile cu126")
    return Check("driver", "ok", f"driver {facts.driver_version} >= {profile.min_driver} ({plan.profile})")


def nvcc_check(facts: Facts, plan: Plan, runner: Runner = run, env: Mapping[str, str] = os.environ) -> Check:
    tc = plan.toolchain
    if not plan.cuda or not tc.cuda_home:
        return Check("nvcc", "ok", "CPU profile: no nvcc needed")
    details = []
    shell_home = env.get("CUDA_HOME")
    if shell_home and os.path.normpath(shell_home) != os.path.normpath(tc.cuda_home):
        details.append(f"CUDA_HOME={shell_home} in this shell differs from the plan's {tc.cuda_home}; "
                       f"the build step sets the plan's, a manual build would not")
    nvcc = Path(tc.cuda_home) / "bin" / "nvcc"
    if tc.cuda_source == "system" and facts.cuda is not None:
        found = facts.cuda.nvcc.version
    else:
        result = runner([str(nvcc), "--version"]) if nvcc.exists() else None
        found = parse_nvcc_version(result.stdout) if result is not None and result.ok else None
        if found is None:
            return Check("nvcc", "warn", f"no working nvcc at {nvcc} yet",
                         f"the env step installs PyPI's CUDA {plan.cuda} toolchain there", "invoke env",
                         tuple(details))
    if version_tuple(found)[:2] != version_tuple(plan.cuda)[:2]:
        return Check("nvcc", "fail", f"nvcc {found} at {tc.cuda_home} differs from torch's CUDA {plan.cuda}",
                     "torch's cpp_extension refuses a mismatched nvcc (cuda-version-mismatch)",
                     "invoke plan && invoke env", tuple(details))
    return Check("nvcc", "warn" if details else "ok",
                 f"nvcc {found} ({tc.cuda_source}) matches torch's CUDA {plan.cuda}", details=tuple(details))


def gcc_check(facts: Facts, plan: Plan) -> Check:
    tc = plan.toolchain
    if not tc.cc:
        return Check("gcc", "warn", "no C/C++ compiler: this host cannot build detectron2",
                     "a runtime image or a host that only runs an env built elsewhere",
                     "apt install build-essential, to build here")
    if tc.max_gcc is None:
        return Check("gcc", "ok", f"gcc {tc.gcc_version} ({tc.cc}); CPU build, no nvcc limit")
    if version_tuple(tc.gcc_version)[0] > tc.max_gcc:
        return Check("gcc", "fail", f"gcc {tc.gcc_version} is newer than nvcc {plan.cuda} accepts (<= {tc.max_gcc})",
                     "nvcc stops with 'unsupported GNU version!'",
                     f"apt install gcc-{tc.max_gcc} g++-{tc.max_gcc}, then invoke plan")
    default = next((c for c in facts.compilers if Path(c.path).name == "gcc"), None)
    if default is not None and version_tuple(default.version)[0] > tc.max_gcc:
        return Check("gcc", "warn",
                     f"plan uses gcc {tc.gcc_version} ({tc.cc}); the default gcc {default.version} is too new",
                     f"nvcc {plan.cuda} accepts gcc <= {tc.max_gcc}; "
                     f"builds outside dpdeploy need CC={tc.cc} CXX={tc.cxx}",
                     "invoke build")
    return Check("gcc", "ok", f"gcc {tc.gcc_version} <= {tc.max_gcc} (nvcc {plan.cuda} limit)")


def import_check(prefix: str, runner: Runner = run) -> Check:
    python = env_python(prefix)
    if not python.exists():
        return env_missing("densepose-import", prefix)
    result = runner([str(python), "-c", IMPORT_PROBE], timeout=300, cwd=str(Path(prefix)))
    if result is None:
        return Check("densepose-import", "fail", f"could not run {python}", "the interpreter is missing or hung",
                     "invoke env")
    if not result.ok:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        known = diagnose(result.stderr)  # the import error may itself be a known signature
        return Check("densepose-import", "fail", f"import densepose fails: {last}",
                     known[0].cause if known else "detectron2/DensePose are missing or broken in the env",
                     known[0].fix if known else "invoke build",
                     tuple(f"{f.id}: {f.line}" for f in known))
    return Check("densepose-import", "ok", f"densepose imports (detectron2 {result.stdout.strip()})")


def disk_check(facts: Facts, plan: Plan, matrix: Matrix) -> Check:
    need = matrix.profile(plan.profile).disk_mib
    have = facts.disk_free_mib
    if have >= need:
        return Check("disk", "ok", f"{have} MiB free at {facts.disk_path} (>= {need} MiB for {plan.profile})")
    built = env_python(plan.prefix).exists()
    return Check("disk", "warn" if built else "fail", f"{have} MiB free at {facts.disk_path} < {need} MiB",
                 f"{plan.profile} needs ~{need} MiB for the env, build and caches (env/matrix.yml disk_mib)",
                 "free space or pick another state root: DPDEPLOY_HOME=/bigger/disk invoke plan")


def memory_check(facts: Facts, plan: Plan, matrix: Matrix) -> Check:
    need = plan.max_jobs * matrix.mem_per_job_mib + matrix.mem_reserve_mib
    if need <= facts.mem_total_mib:
        return Check("memory", "ok", f"MAX_JOBS={plan.max_jobs} needs ~{need} MiB of {facts.mem_total_mib} MiB RAM")
    fits, _ = max_jobs_for(facts, matrix)
    return Check("memory", "fail",
                 f"MAX_JOBS={plan.max_jobs} needs ~{need} MiB but the host has {facts.mem_total_mib} MiB",
                 f"each compiler job peaks at ~{matrix.mem_per_job_mib} MiB; the OOM killer stops cc1plus",
                 f"invoke build --max-jobs {fits}")


def run_checks(facts: Facts, plan: Plan, matrix: Matrix, runner: Runner = run,
               env: Mapping[str, str] = os.environ) -> list[Check]:
    """All live checks, in a fixed order."""
    profile = matrix.profile(plan.profile)
    stamp, stamp_problems = read_build_stamp(plan.prefix)
    return [
        driver_check(facts, plan, matrix),
        nvcc_check(facts, plan, runner, env),
        gcc_check(facts, plan),
        *stamp_problems,
        arch_check(stamp, facts.gpus, profile.is_cuda),
        import_check(plan.prefix, runner),
        disk_check(facts, plan, matrix),
        memory_check(facts, plan, matrix),
    ]
