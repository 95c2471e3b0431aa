"""Hash-pinned pip locks per profile: env/locks/<profile>.in (rendered from the matrix) and
env/locks/<profile>.txt (resolved by uv, never edited by hand)."""
from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from dpdeploy import paths
from dpdeploy.fsutil import atomic_write_text
from dpdeploy.plan.matrix import Matrix, Profile
from dpdeploy.host.network import Reach, reachable
from dpdeploy.runner import Runner, run

ROOT = paths.ROOT
LOCK_DIR = Path("env") / "locks"           # relative to the checkout, as lock headers show it
# Python the locks are made for when no plan picks one: this host's and Debian 12's python3.
DEFAULT_PYTHON = "3.11"
# torch 2.14.1's Linux wheels are tagged manylinux_2_28_x86_64 (PyPI file list).
PLATFORM = "x86_64-manylinux_2_28"
_PIN_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
_PYTHON_IN_HEADER = re.compile(r"--python-version (\d+\.\d+)")


class LockError(Exception):
    """A lock cannot be made or used: what failed, why, and the next step."""

    def __init__(self, what: str, why: list[str], next_steps: list[str]):
        super().__init__(what)
        self.what, self.why, self.next_steps = what, why, next_steps

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.what, "why": self.why, "next": self.next_steps}

    def __str__(self) -> str:
        return "\n".join([self.what] + [f"  why: {w}" for w in self.why] + [f"  next: {n}" for n in self.next_steps])


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def local_label(profile: Profile) -> str:
    """PyTorch-index wheels carry a local version (2.14.1+cu126); PyPI's carry none."""
    return "" if profile.on_pypi else "+" + profile.index.rstrip("/").rsplit("/", 1)[-1]


def pins(matrix: Matrix, profile: Profile, toolchain: bool = True) -> dict[str, str]:
    """Every exact pin of the profile's env, in input order: torch, runtime, build tools, CUDA toolchain."""
    label = local_label(profile)
    out = {"torch": profile.torch + label, "torchvision": profile.torchvision + label}
    out.update(matrix.runtime)
    out.update(matrix.build_tools)
    if profile.is_cuda and toolchain:
        wheels = matrix.cuda_toolchain.get(profile.cuda)
        if wheels is None:
            raise LockError(f"no CUDA {profile.cuda} toolchain pins for {profile.name}",
                            [f"{matrix.path} has no cuda_toolchain row \"{profile.cuda}\""],
                            [f"add the nvcc/cccl pins of torch {profile.torch}+cu{profile.cuda.replace('.', '')}'s "
                             f"cuda-toolkit requirement to cuda_toolchain in {matrix.path}"])
        out.update(wheels)
    return out


def render_input(matrix: Matrix, profile: Profile) -> str:
    lines = [f"# Input of env/locks/{profile.name}.txt, rendered from env/matrix.yml by `invoke lock`.",
             "# Do not edit: change the matrix and run `invoke lock`."]
    lines += [f"{name}=={version}" for name, version in pins(matrix, profile).items()]
    return "\n".join(lines) + "\n"


def input_path(profile: str) -> Path:
    return LOCK_DIR / f"{profile}.in"


def lock_path(profile: str) -> Path:
    return LOCK_DIR / f"{profile}.txt"


@dataclass(frozen=True)
class Lock:
    profile: str
    path: str
    sha256: str
    python: str                 # major.minor the lock was resolved for
    pins: dict[str, str]        # normalized name -> version, every package in the lock

    @classmethod
    def parse(cls, profile: str, path: str, text: str) -> "Lock":
        found = {normalize(m.group(1)): m.group(2) for m in map(_PIN_LINE.match, text.splitlines()) if m}
        py = _PYTHON_IN_HEADER.search(text)
        return cls(profile, path, hashlib.sha256(text.encode("utf-8")).hexdigest(),
                   py.group(1) if py else "", found)


def unreachable_index(profile: Profile, reach: Reach) -> Optional[str]:
    """Why the profile's non-PyPI index cannot be reached (None when it can, or for PyPI)."""
    return None if profile.on_pypi else reach(profile.index.rstrip("/") + "/")


def _regenerate_hint(profile: Profile) -> str:
    host = profile.index.split("/")[2]
    return (f"run `invoke lock --profile {profile.name}` on a host that reaches {host} "
            f"and commit {lock_path(profile.name)}")


def load(profile: Profile, root: Path = ROOT) -> Lock:
    """The committed lock of a profile, or a LockError saying how to make it."""
    path = root / lock_path(profile.name)
    if not path.is_file():
        why = [f"{lock_path(profile.name)} does not exist"]
        if not profile.on_pypi:
            why.append(f"{profile.name}'s wheels live on {profile.index}, so its lock is made where that index is reachable")
            nxt = [_regenerate_hint(profile), "or use a PyPI profile (--profile cu130; it also runs on the CPU)"]
        else:
            nxt = [f"run `invoke lock --profile {profile.name}` and commit {lock_path(profile.name)}"]
        raise LockError(f"no lock for profile {profile.name}", why, nxt)
    return Lock.parse(profile.name, str(lock_path(profile.name)), path.read_text(encoding="utf-8"))


def uv_path() -> str:
    """uv from the tools venv that runs dpdeploy, else from PATH."""
    beside = Path(sys.executable).with_name("uv")
    return str(beside) if beside.exists() else "uv"


def compile_argv(profile: Profile, python_version: str, uv: str = "uv") -> list[str]:
    argv = [uv, "pip", "compile", "--no-config", "--quiet", "--generate-hashes",
            "--python-version", python_version, "--python-platform", PLATFORM,
            "--custom-compile-command", f"invoke lock --profile {profile.name} --python-version {python_version}"]
    if not profile.on_pypi:
        argv += ["--extra-index-url", profile.index, "--index-strategy", "unsafe-best-match", "--emit-index-url"]
    return argv + [str(input_path(profile.name))]


@dataclass
class LockResult:
    profile: str
    status: str                 # "locked", "planned" (dry), "skipped" (index unreachable)
    command: str
    path: str = ""
    packages: int = 0
    size_bytes: int = 0
    sha256: str = ""
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lock_profile(matrix: Matrix, profile: Profile, python_version: str, *, dry: bool = False,
                 runner: Runner = run, reach: Reach = reachable, root: Path = ROOT,
                 uv: Optional[str] = None) -> LockResult:
    """Render the profile's input spec and resolve it with uv into the hashed lock."""
    argv = compile_argv(profile, python_version, uv or uv_path())
    command = " ".join(argv[:1] + [a if " " not in a else repr(a) for a in argv[1:]])
    if dry:
        return LockResult(profile.name, "planned", command, str(lock_path(profile.name)))
    why = unreachable_index(profile, reach)
    if why:
        raise LockError(f"cannot lock profile {profile.name}",
                        [why, f"{profile.name}'s torch wheels exist only on {profile.index}"],
                        [_regenerate_hint(profile)])
    atomic_write_text(root / input_path(profile.name), render_input(matrix, profile))
    done = runner(argv, timeout=900, cwd=str(root))
    if done is None:
        raise LockError(f"uv did not run for {profile.name}", [f"{argv[0]} is missing or took over 15 minutes"],
                        ["run `python3 bootstrap.py --list` to (re)create the tools venv with uv"])
    if not done.ok:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise LockError(f"uv could not resolve {input_path(profile.name)}", [tail or f"exit {done.returncode}"],
                        ["fix the conflicting pins in env/matrix.yml and run `invoke lock` again"])
    atomic_write_text(root / lock_path(profile.name), done.stdout)
    lock = Lock.parse(profile.name, str(lock_path(profile.name)), done.stdout)
    return LockResult(profile.name, "locked", command, lock.path, len(lock.pins),
                      len(done.stdout.encode("utf-8")), lock.sha256)


def skipped(profile: Profile, why: str) -> LockResult:
    return LockResult(profile.name, "skipped", "", str(lock_path(profile.name)),
                      message=f"{why}; {_regenerate_hint(profile)}")


def drift(matrix: Matrix, profile: Profile, lock: Lock) -> list[str]:
    """Where the matrix's pins and a lock disagree (empty when they agree)."""
    problems = []
    for name, version in pins(matrix, profile).items():
        found = lock.pins.get(normalize(name))
        if found != version:
            problems.append(f"{name}: matrix {version}, {lock.path} {found or 'missing'}")
    return problems
