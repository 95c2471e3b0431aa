"""The plan: a pure function of (facts, matrix, settings). It is what ``--dry`` prints."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from dpdeploy.host.facts import Facts, Tool
from dpdeploy.plan import hosttorch
from dpdeploy.plan.driver import new_enough
from dpdeploy.plan.matrix import Matrix, Profile, parse_arch_list, version_tuple
from dpdeploy.plan.settings import Settings

STEPS = (
    ("env", "create the locked Python environment"),
    ("build", "build detectron2 and DensePose at the pinned commit"),
    ("weights", "fetch checksum-verified DensePose weights"),
    ("smoke", "run the smoke tests on the sample photos"),
    ("report", "write the deployment report"),
)
STEP_NAMES = tuple(name for name, _ in STEPS)


class PlanError(Exception):
    """No plan can be made: what failed, why, and the next step."""

    def __init__(self, what: str, why: list[str], next_steps: list[str], rejected: Optional[dict] = None):
        super().__init__(what)
        self.what = what
        self.why = why
        self.next_steps = next_steps
        self.rejected = rejected or {}

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.what, "why": self.why, "next": self.next_steps, "rejected": self.rejected}

    def __str__(self) -> str:
        lines = [self.what] + [f"  why: {w}" for w in self.why] + [f"  next: {n}" for n in self.next_steps]
        return "\n".join(lines)


@dataclass(frozen=True)
class Toolchain:
    cc: str                       # "" = no compiler on this host (the build refuses)
    cxx: str
    gcc_version: str
    cuda_home: Optional[str]      # None for CPU profiles
    cuda_source: Optional[str]    # "system" or "pypi" (toolchain wheels in the env)
    max_gcc: Optional[int]


@dataclass(frozen=True)
class Step:
    name: str
    summary: str


@dataclass(frozen=True)
class Plan:
    profile: str
    summary: str
    torch: str
    torchvision: str
    cuda: Optional[str]
    min_driver: Optional[str]     # NVIDIA driver the profile's CUDA needs (None for CPU profiles)
    index: str
    device: str                   # where DensePose will run: "cuda" or "cpu"
    gpus: tuple[dict, ...]
    torch_cuda_arch_list: str     # "" for CPU profiles
    force_cuda: bool
    max_jobs: int
    python: str
    python_version: str
    home: str
    prefix: str
    toolchain: Toolchain
    detectron2_repo: str
    detectron2_commit: str
    reasons: tuple[str, ...]
    rejected: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    steps: tuple[Step, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Rejection:
    reason: str
    hint: str


# --- pieces (each pure) ---------------------------------------------------------------------

def arch_list_for(ccs: list[str]) -> str:
    """Deduplicated, sorted compute capabilities with +PTX on the highest."""
    uniq = sorted(set(ccs), key=version_tuple)
    return ";".join(uniq[:-1] + [uniq[-1] + "+PTX"]) if uniq else ""


def max_jobs_for(facts: Facts, matrix: Matrix) -> tuple[int, str]:
    by_mem = max(1, (facts.mem_total_mib - matrix.mem_reserve_mib) // matrix.mem_per_job_mib)
    jobs = max(1, min(facts.cpu_count, by_mem))
    why = (f"MAX_JOBS={jobs}: min({facts.cpu_count} cores, ({facts.mem_total_mib} MiB RAM - "
           f"{matrix.mem_reserve_mib} MiB reserve) / {matrix.mem_per_job_mib} MiB per job = {by_mem})")
    return jobs, why


def pick_python(profile: Profile, facts: Facts, wanted: str) -> tuple[Optional[Tool], str]:
    pythons = [p for p in facts.pythons if not wanted or p.path == wanted]
    if wanted and not pythons:
        return None, f"--python {wanted} was not among the probed interpreters"
    for tool in pythons:
        if profile.python_ok(tool.version):
            return tool, ""
    found = ", ".join(f"{t.version} ({t.path})" for t in pythons) or "none"
    return None, f"needs Python {profile.python_min}-{profile.python_max}; found {found}"


def pick_gcc(facts: Facts, max_major: Optional[int]) -> tuple[Optional[Tool], str]:
    if not facts.compilers:
        return None, "no gcc found"
    ok = [c for c in facts.compilers if max_major is None or version_tuple(c.version)[0] <= max_major]
    if not ok:
        newest = max(facts.compilers, key=lambda c: version_tuple(c.version))
        return None, f"gcc {newest.version} is newer than nvcc allows (gcc <= {max_major})"
    return max(ok, key=lambda c: version_tuple(c.version)), ""


def _cxx_for(cc: str) -> str:
    path = Path(cc)
    return str(path.with_name(path.name.replace("gcc", "g++", 1)))


def disk_shortfall(profile: Profile, facts: Facts) -> str:
    """"" when the disk holds what creating ``profile``'s env and build takes, else what is short.
    Only making the env needs it (the env step refuses then); an env already made runs, so no
    profile is rejected for it and `invoke predict` never is."""
    if facts.disk_free_mib >= profile.disk_mib:
        return ""
    return (f"{facts.disk_free_mib / 1024:.1f} GiB free at {facts.disk_path}; creating the {profile.name} env and "
            f"build takes ~{profile.disk_mib / 1024:.1f} GiB (env/matrix.yml disk_mib)")


def _reject(profile: Profile, facts: Facts, matrix: Matrix, settings: Settings, prefix: str) -> Optional[_Rejection]:
    if profile.host:
        found = hosttorch.rejection(profile, facts, settings.python)
        return _Rejection(*found) if found else None
    python, why = pick_python(profile, facts, settings.python)
    if python is None:
        return _Rejection(why, f"install Python {profile.python_max} (e.g. apt install python3 python3-venv)")
    if not profile.is_cuda:
        return None
    if facts.gpus:
        if facts.driver_version is None:
            return _Rejection("NVIDIA driver version unknown", "check that `nvidia-smi` works")
        if not new_enough(facts.driver_version, profile.min_driver):
            return _Rejection(
                f"driver {facts.driver_version} is older than {profile.min_driver} (CUDA {profile.cuda} needs it)",
                f"install NVIDIA driver >= {profile.min_driver} for {profile.name}",
            )
        outside = [g for g in facts.gpus if not profile.covers(g.compute_capability)]
        if outside:
            names = ", ".join(f"GPU {g.index} {g.name} (sm_{g.compute_capability.replace('.', '')})"
                              if g.compute_capability != "unknown"
                              else f"GPU {g.index} {g.name} (compute capability unknown)"
                              for g in outside)
            return _Rejection(
                f"{names} outside {profile.name}'s range {profile.cc_min}-{profile.cc_max}",
                "choose a profile whose range covers these GPUs, or hide them with CUDA_VISIBLE_DEVICES",
            )
    if settings.arch_list:
        try:
            archs = parse_arch_list(settings.arch_list)
        except ValueError as exc:
            return _Rejection(f"--arch-list: {exc}", "pass e.g. --arch-list '8.0;9.0+PTX'")
        outside = [a for a, _ in archs if not profile.covers(a)]
        if outside:
            return _Rejection(f"--arch-list {', '.join(outside)} outside {profile.cc_min}-{profile.cc_max}",
                              "drop those archs or choose another profile")
    gcc, why = pick_gcc(facts, matrix.max_gcc(profile.cuda))
    if gcc is None and facts.compilers:   # no compiler at all fits no profile better: see _toolchain
        limit = matrix.max_gcc(profile.cuda)
        return _Rejection(why, f"install gcc-{limit} g++-{limit} (apt install gcc-{limit} g++-{limit})")
    return None


def _toolchain(cuda: Optional[str], facts: Facts, matrix: Matrix, prefix: str) -> tuple[Toolchain, list[str]]:
    """The compilers for a build of CUDA ``cuda`` kernels (None: a CPU-only build)."""
    max_gcc = matrix.max_gcc(cuda) if cuda else None
    gcc, _ = pick_gcc(facts, max_gcc)
    if gcc is None:  # a host that runs an env built elsewhere (a runtime image): only the build refuses
        reasons = ["compiler: none found; the build step refuses, predict/smoke/verify run an env built already"]
    else:
        limit = f", nvcc {cuda} accepts gcc <= {max_gcc}" if max_gcc else ""
        reasons = [f"compiler: gcc {gcc.version} ({gcc.path}){limit}"]
    cuda_home = source = None
    if cuda:
        sys_cuda = facts.cuda
        same = sys_cuda is not None and version_tuple(sys_cuda.nvcc.version)[:2] == version_tuple(cuda)[:2]
        if same and sys_cuda.has_library_headers:
            cuda_home, source = sys_cuda.home, "system"
            reasons.append(f"CUDA_HOME={cuda_home}: system CUDA {sys_cuda.nvcc.version} "
                           f"matches torch's CUDA {cuda}")
        else:
            cuda_home, source = str(Path(prefix) / "cuda"), "pypi"
            if sys_cuda is None:
                why = "no system CUDA toolkit"
            elif not same:
                why = f"system CUDA {sys_cuda.nvcc.version} at {sys_cuda.home} differs from torch's CUDA {cuda}"
            else:
                why = f"system CUDA at {sys_cuda.home} lacks library headers (cusparse.h)"
            reasons.append(f"CUDA_HOME={cuda_home}: {why}; "
                           f"using PyPI's CUDA {cuda} toolchain wheels in the env")
    if gcc is None:
        return Toolchain("", "", "", cuda_home, source, max_gcc), reasons
    return Toolchain(gcc.path, _cxx_for(gcc.path), gcc.version, cuda_home, source, max_gcc), reasons


def _platform_checks(facts: Facts, matrix: Matrix) -> list[str]:
    if facts.system != "Linux":
        raise PlanError(f"unsupported OS: {facts.system}", ["DensePose deployments need Linux"],
                        ["run on a Linux host (or WSL2 with a Linux distribution)"])
    if facts.machine not in matrix.machines:
        raise PlanError(f"unsupported CPU architecture: {facts.machine}",
                        [f"the matrix supports {', '.join(matrix.machines)}"],
                        [f"use an {matrix.machines[0]} host"])
    tested = matrix.tested_os.get(facts.os_id, ())
    if facts.os_version not in tested:
        return [f"{facts.os_name} is not among the tested systems "
                f"({', '.join(f'{k} {v}' for k, vs in matrix.tested_os.items() for v in vs)}); planning anyway"]
    return []


def resolve(facts: Facts, matrix: Matrix, settings: Settings) -> Plan:
    """Choose a profile and derive everything the steps need, with the reasons."""
    warnings = _platform_checks(facts, matrix)
    reasons: list[str] = []
    rejected: dict[str, str] = {}
    forced = settings.profile != "auto"
    if forced:
        candidates = [matrix.profile(settings.profile).name]
        reasons.append(f"profile {settings.profile} chosen by {settings.origins.get('profile', 'setting')}")
    elif facts.gpus:
        candidates = list(matrix.auto_gpu)
    else:
        candidates = [matrix.auto_no_gpu]
        detail = "; ".join(facts.notes) or "no GPU reported"
        reasons.append(f"no NVIDIA GPU found ({detail}): CPU plan")
        rejected.update({name: "no NVIDIA GPU on this host" for name in matrix.auto_gpu})

    home = str(settings.home_path)
    chosen = None
    hints = []
    for name in candidates:
        profile = matrix.profile(name)
        prefix = settings.prefix or str(Path(home) / "envs" / name)
        rejection = _reject(profile, facts, matrix, settings, prefix)
        if rejection is None:
            chosen = profile
            break
        rejected[name] = rejection.reason
        hints.append(f"{name}: {rejection.hint}")
    if chosen is None:
        why = [f"{n}: {r}" for n, r in rejected.items()]
        nxt = hints + ([] if forced or not facts.gpus else [f"or plan the CPU profile: --profile {matrix.auto_no_gpu}"])
        raise PlanError("no profile fits this host", why, nxt, rejected)

    if not forced and facts.gpus:
        gpus = ", ".join(f"{g.name} sm_{g.compute_capability}" for g in facts.gpus)
        reasons.insert(0, f"{chosen.name}: first profile whose driver and GPU range fit "
                          f"({gpus}; driver {facts.driver_version})")
    prefix = settings.prefix or str(Path(home) / "envs" / chosen.name)
    host = facts.host_torch if chosen.host else None
    if host is not None:
        python = Tool(settings.python, host.python_version)
        reasons.append(f"host torch {host.torch} (CUDA {host.cuda or 'none'}; archs {' '.join(host.arch_list) or 'none'})"
                       f" and torchvision {host.torchvision} of {settings.python}: used as they are, not installed")
    else:
        python, _ = pick_python(chosen, facts, settings.python)
    reasons.append(f"python: {python.version} ({python.path}) within {chosen.python_min}-{chosen.python_max}")
    cuda = (host.cuda or None) if host is not None else chosen.cuda
    build_cuda = chosen.is_cuda or bool(cuda and (facts.gpus or hosttorch.system_nvcc_for(facts, cuda)))

    arch_list = ""
    if build_cuda:
        if settings.arch_list:
            arch_list = ";".join(a + ("+PTX" if ptx else "") for a, ptx in parse_arch_list(settings.arch_list))
            reasons.append(f"TORCH_CUDA_ARCH_LIST={arch_list} from {settings.origins.get('arch_list')}")
        elif facts.gpus:
            arch_list = arch_list_for([g.compute_capability for g in facts.gpus])
            reasons.append(f"TORCH_CUDA_ARCH_LIST={arch_list}: exactly the GPUs present, +PTX on the highest")
        else:
            arch_list = hosttorch.arch_list_of(host.arch_list) if host is not None else chosen.arch_list
            whose = "the host torch" if host else chosen.name
            reasons.append(f"TORCH_CUDA_ARCH_LIST={arch_list}: no GPU visible, so {whose}'s full list")
            warnings.append("no GPU on this host: CUDA kernels are built but DensePose will run on the CPU here")
    else:
        reasons.append("CPU-only detectron2 build (no CUDA kernels)")
        if cuda:
            warnings.append(f"no CUDA {cuda} nvcc here: detectron2 is built without CUDA kernels for the host's CUDA torch")

    toolchain, tool_reasons = _toolchain(cuda if build_cuda else None, facts, matrix, prefix)
    reasons.extend(tool_reasons)
    if not toolchain.cc:
        warnings.append("no C/C++ compiler: the build step will refuse (apt install build-essential)")
    if settings.max_jobs > 0:
        jobs, why = settings.max_jobs, f"MAX_JOBS={settings.max_jobs} from {settings.origins.get('max_jobs')}"
    else:
        jobs, why = max_jobs_for(facts, matrix)
    reasons.append(why)
    short = disk_shortfall(chosen, facts)
    if short:
        warnings.append(f"{short}: the env step refuses to create it here (an env already made is used as it is)")
    if not chosen.on_pypi:
        warnings.append(f"{chosen.name} installs from {chosen.index}: that index must be reachable")

    device = "cuda" if cuda and facts.gpus else "cpu"
    return Plan(
        profile=chosen.name,
        summary=chosen.summary,
        torch=host.torch if host else chosen.torch,
        torchvision=host.torchvision if host else chosen.torchvision,
        cuda=cuda,
        min_driver=chosen.min_driver,
        index=chosen.index,
        device=device,
        gpus=tuple({"index": g.index, "name": g.name, "compute_capability": g.compute_capability}
                   for g in facts.gpus),
        torch_cuda_arch_list=arch_list,
        force_cuda=build_cuda,
        max_jobs=jobs,
        python=python.path,
        python_version=python.version,
        home=home,
        prefix=prefix,
        toolchain=toolchain,
        detectron2_repo=matrix.d2_repo,
        detectron2_commit=matrix.d2_commit,
        reasons=tuple(reasons),
        rejected=rejected,
        warnings=tuple(warnings),
        steps=tuple(Step(n, s) for n, s in STEPS),
    )
