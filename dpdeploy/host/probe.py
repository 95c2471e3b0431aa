"""Probe the live host into ``Facts``. Pure parsers + one ``probe`` that uses an injected runner."""
from __future__ import annotations

import os
import platform
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from dpdeploy.host.facts import CudaToolkit, Facts, Gpu, Tool
from dpdeploy.runner import Runner, run

NVIDIA_SMI_QUERY = "index,name,compute_cap,memory.total,driver_version"
PYTHON_NAMES = ("python3",) + tuple(f"python3.{minor}" for minor in range(9, 16))
GCC_NAMES = ("gcc",) + tuple(f"gcc-{major}" for major in range(9, 16))
# A complete toolkit ships the math-library headers; nvcc-only installs do not (seen here).
LIBRARY_HEADERS = ("cusparse.h", "cublas_v2.h")


# --- parsers (pure) ------------------------------------------------------------------------

def parse_os_release(text: str) -> dict[str, str]:
    """``/etc/os-release`` as a dict (quotes stripped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key] = value.strip().strip('"').strip("'")
    return out


def parse_meminfo_mib(text: str, field: str = "MemTotal") -> int:
    """A /proc/meminfo field in MiB (0 when absent)."""
    match = re.search(rf"^{field}:\s+(\d+)\s*kB", text, re.M)
    return int(match.group(1)) // 1024 if match else 0


def parse_nvcc_version(text: str) -> Optional[str]:
    """``nvcc --version`` -> "13.0.88" (or "13.0" when only the release is printed)."""
    match = re.search(r"release (\d+\.\d+), V(\d+\.\d+\.\d+)", text)
    if match:
        return match.group(2)
    match = re.search(r"release (\d+\.\d+)", text)
    return match.group(1) if match else None


def parse_gcc_version(text: str) -> Optional[str]:
    """``gcc -dumpfullversion`` ("12.2.0") or the first line of ``gcc --version``."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)*", text):
        return text
    match = re.search(r"\)\s+(\d+\.\d+(?:\.\d+)?)", text.splitlines()[0] if text else "")
    return match.group(1) if match else None


PYTHON_ARGS = ["-c", "import platform, sys; print(platform.python_version(), sys.executable)"]


def parse_python(text: str) -> Optional[tuple[str, str]]:
    """Output of ``PYTHON_ARGS`` -> (version, real executable)."""
    match = re.match(r"(\d+\.\d+\.\d+)\S*\s+(/\S.*)$", text.strip())
    return (match.group(1), match.group(2)) if match else None


def parse_nvidia_smi(text: str) -> tuple[Optional[str], list[Gpu]]:
    """CSV from ``nvidia-smi --query-gpu=<NVIDIA_SMI_QUERY> --format=csv,noheader,nounits``."""
    driver = None
    gpus = []
    for line in text.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 5 or not cells[0].isdigit():
            continue
        index, name, cap, mem, drv = cells
        gpus.append(Gpu(int(index), name, cap if re.fullmatch(r"\d+\.\d+", cap) else "unknown", _int(mem)))
        driver = driver or drv
    return driver, gpus


def _int(text: str) -> int:
    match = re.match(r"\d+", text)
    return int(match.group(0)) if match else 0


# --- live probe ----------------------------------------------------------------------------

def _tool(runner: Runner, exe: str, args: list[str], parse: Callable[[str], Optional[str]]) -> Optional[Tool]:
    result = runner([exe, *args], timeout=30)
    if result is None or not result.ok:
        return None
    version = parse(result.stdout + result.stderr)
    return Tool(exe, version) if version else None


def find_pythons(runner: Runner, which) -> tuple[Tool, ...]:
    """Each distinct interpreter once, by its real executable (pyenv shims resolve)."""
    found: dict[str, Tool] = {}
    for name in PYTHON_NAMES:
        path = which(name)
        result = runner([path, *PYTHON_ARGS], timeout=30) if path else None
        parsed = parse_python(result.stdout) if result is not None and result.ok else None
        if parsed and os.path.realpath(parsed[1]) not in found:
            found[os.path.realpath(parsed[1])] = Tool(parsed[1], parsed[0])
    return tuple(found.values())


def find_compilers(runner: Runner, which) -> tuple[tuple[Tool, ...], list[str]]:
    """gcc executables that have a g++ beside them (the build needs both)."""
    found: dict[str, Tool] = {}
    notes = []
    for name in GCC_NAMES:
        path = which(name)
        tool = _tool(runner, path, ["-dumpfullversion"], parse_gcc_version) if path else None
        if tool is None or os.path.realpath(path) in found:
            continue
        if which(name.replace("gcc", "g++", 1)) is None:
            notes.append(f"{name} {tool.version} has no {name.replace('gcc', 'g++', 1)}: not usable")
            continue
        found[os.path.realpath(path)] = tool
    return tuple(found.values()), notes


def find_cuda_toolkit(runner: Runner, env: Mapping[str, str], which) -> Optional[CudaToolkit]:
    """The system toolkit: $CUDA_HOME, $CUDA_PATH, /usr/local/cuda, then nvcc's real location.

    ``nvcc`` on PATH can be a wrapper script, so its own folder is only trusted when it holds
    a real ``bin/nvcc`` (torch guesses from PATH and gets this wrong).
    """
    candidates = [env.get("CUDA_HOME"), env.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc_on_path = which("nvcc")
    if nvcc_on_path:
        candidates.append(str(Path(os.path.realpath(nvcc_on_path)).parent.parent))
    for home in filter(None, candidates):
        nvcc = Path(home) / "bin" / "nvcc"
        if not nvcc.is_file():
            continue
        tool = _tool(runner, str(nvcc), ["--version"], parse_nvcc_version)
        if tool is None:
            continue
        includes = [Path(home) / "include", Path(home) / "targets" / f"{platform.machine()}-linux" / "include"]
        headers = all(any((inc / h).is_file() for inc in includes) for h in LIBRARY_HEADERS)
        return CudaToolkit(nvcc=tool, home=os.path.realpath(home), has_library_headers=headers)
    return None


def _nvml_gpus(nvml: Any) -> tuple[Optional[str], list[Gpu]]:
    nvml.nvmlInit()
    try:
        driver = nvml.nvmlSystemGetDriverVersion()
        gpus = []
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
            name = nvml.nvmlDeviceGetName(handle)
            gpus.append(Gpu(
                i,
                name.decode() if isinstance(name, bytes) else name,
                f"{major}.{minor}",
                nvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024),
            ))
        return (driver.decode() if isinstance(driver, bytes) else driver), gpus
    finally:
        nvml.nvmlShutdown()


def load_nvml() -> Any:
    """The NVML bindings (nvidia-ml-py) or None."""
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def probe_gpus(runner: Runner, nvml: Any) -> tuple[Optional[str], tuple[Gpu, ...], Optional[str], list[str]]:
    """(driver, gpus, source, notes): NVML when it works, else nvidia-smi, else none."""
    notes = []
    if nvml is not None:
        try:
            driver, gpus = _nvml_gpus(nvml)
            return driver, tuple(gpus), "nvml", notes
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            notes.append(f"NVML unavailable: {exc}")
    smi = runner(["nvidia-smi", f"--query-gpu={NVIDIA_SMI_QUERY}", "--format=csv,noheader,nounits"], timeout=30)
    if smi is None:
        notes.append("nvidia-smi: not found")
        return None, (), None, notes
    if not smi.ok:
        # Old drivers (< 510) reject the compute_cap field; the driver version still tells.
        drv = runner(["nvidia-smi", "--query-gpu=index,name,memory.total,driver_version",
                      "--format=csv,noheader,nounits"], timeout=30)
        if drv is not None and drv.ok:
            rows = [line.rsplit(",", 3) for line in drv.stdout.strip().splitlines()]
            text = "\n".join(f"{r[0]},{r[1]},unknown,{r[2]},{r[3]}" for r in rows if len(r) == 4)
            driver, gpus = parse_nvidia_smi(text)
            notes.append("nvidia-smi cannot report compute capability (driver older than R510)")
            return driver, tuple(gpus), "nvidia-smi", notes
        notes.append(f"nvidia-smi failed: {(smi.stderr or smi.stdout).strip()[:200]}")
        return None, (), None, notes
    driver, gpus = parse_nvidia_smi(smi.stdout)
    return driver, tuple(gpus), "nvidia-smi", notes


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


BF16_FLAGS = ("avx512_bf16", "amx_bf16")   # the CPU instructions torch's bf16 kernels (oneDNN) use


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; all of them where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_has_bf16(cpuinfo: Optional[str] = None) -> bool:
    """Whether /proc/cpuinfo (or ``cpuinfo``) lists an instruction set for fast bf16."""
    text = _read("/proc/cpuinfo") if cpuinfo is None else cpuinfo
    flags = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[-1].split()}
    return any(flag in flags for flag in BF16_FLAGS)


def free_mib(path: str) -> tuple[str, int]:
    """Free space at ``path`` or at its nearest existing parent."""
    target = Path(path).expanduser().absolute()
    while not target.exists() and target != target.parent:
        target = target.parent
    return str(target), shutil.disk_usage(target).free // (1024 * 1024)


def probe(
    disk_path: str,
    runner: Runner = run,
    nvml: Any = None,
    env: Mapping[str, str] = os.environ,
    which: Callable[[str], Optional[str]] = shutil.which,
) -> Facts:
    """Probe this host. Missing tools are recorded as absent, never raised."""
    osr = parse_os_release(_read("/etc/os-release"))
    driver, gpus, source, notes = probe_gpus(runner, nvml)
    disk, free = free_mib(disk_path)
    compilers, compiler_notes = find_compilers(runner, which)
    cpus = usable_cpus()
    return Facts(
        os_id=osr.get("ID", platform.system().lower()),
        os_version=osr.get("VERSION_ID", ""),
        os_name=osr.get("PRETTY_NAME", platform.platform()),
        kernel=platform.release(),
        system=platform.system(),
        machine=platform.machine(),
        cpu_count=cpus,
        mem_total_mib=parse_meminfo_mib(_read("/proc/meminfo")),
        disk_path=disk,
        disk_free_mib=free,
        pythons=find_pythons(runner, which),
        compilers=compilers,
        cuda=find_cuda_toolkit(runner, env, which),
        driver_version=driver,
        gpus=gpus,
        gpu_source=source,
        notes=tuple(notes + compiler_notes),
    )
