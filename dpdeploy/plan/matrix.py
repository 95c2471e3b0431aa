"""Load and validate ``env/matrix.yml``: a broken matrix is an error naming the key."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from dpdeploy import paths
from dpdeploy.fsutil import read_user_text

DEFAULT_PATH = paths.MATRIX
VERSION = re.compile(r"^\d+(\.\d+)*$")
# An exact PyPI release as the matrix pins it: 2.2.6, 0.1.5.post20221221, 1.0rc1.
PIN = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?$")


class MatrixError(ValueError):
    """The matrix file is missing, malformed, or inconsistent."""


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text))


ARCH = re.compile(r"^(\d+\.\d+)(\+PTX)?$")


def parse_arch_list(text: str) -> list[tuple[str, bool]]:
    """"8.0;9.0+PTX" (or space-separated) -> [("8.0", False), ("9.0", True)]."""
    items = [t for t in re.split(r"[;\s]+", text.strip()) if t]
    if not items:
        raise ValueError("empty arch list")
    out = []
    for item in items:
        match = ARCH.match(item)
        if not match:
            raise ValueError(f"{item!r} is not an arch like 8.6 or 9.0+PTX")
        out.append((match.group(1), bool(match.group(2))))
    return out


@dataclass(frozen=True)
class Profile:
    name: str
    summary: str
    torch: str
    torchvision: str
    cuda: Optional[str]
    index: str
    python_min: str
    python_max: str
    cc_min: Optional[str]
    cc_max: Optional[str]
    min_driver: Optional[str]
    disk_mib: int
    arch_list: str  # full TORCH_CUDA_ARCH_LIST for GPU-less builds ("" for CPU profiles)
    host: bool = False  # uses the torch of --python; torch/torchvision are then the oldest accepted
    extras: tuple[str, ...] = ()  # optional pin groups of the matrix's `extras` (e.g. ray) this env adds

    @property
    def is_cuda(self) -> bool:
        return self.cuda is not None

    @property
    def on_pypi(self) -> bool:
        return self.index == "pypi"

    def python_ok(self, version: str) -> bool:
        mm = version_tuple(version)[:2]
        return version_tuple(self.python_min) <= mm <= version_tuple(self.python_max)

    def covers(self, cc: str) -> bool:
        if not self.is_cuda or not VERSION.match(cc):
            return False
        return version_tuple(self.cc_min) <= version_tuple(cc) <= version_tuple(self.cc_max)


@dataclass(frozen=True)
class Matrix:
    path: str
    raw: Mapping[str, Any]
    profiles: Mapping[str, Profile]
    auto_gpu: tuple[str, ...]
    auto_no_gpu: str
    nvcc_max_gcc: Mapping[str, int]
    machines: tuple[str, ...]
    tested_os: Mapping[str, tuple[str, ...]]
    mem_per_job_mib: int
    mem_reserve_mib: int
    d2_repo: str
    d2_commit: str
    densepose_subdir: str
    models: Mapping[str, Mapping[str, Any]]
    default_model: str
    zoo_url: str
    samples: Mapping[str, Mapping[str, Any]]
    runtime: Mapping[str, str] = field(default_factory=dict)          # pip name -> exact version
    d2_tree: str = ""     # build/source.py tree_hash of the pinned commit's tree ("" = not pinned)
    build_tools: Mapping[str, str] = field(default_factory=dict)
    cuda_toolchain: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # CUDA -> pins
    build_only: tuple[str, ...] = ()   # pins only compiling uses (the runtime image drops them)
    conda: Mapping[str, Any] = field(default_factory=dict)
    extras: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # group -> pins (name[extra] -> version)

    def model_url(self, name: str) -> str:
        entry = self.models[name]
        return f"{self.zoo_url}/{name}/{entry['id']}/model_final_{entry['md5_prefix']}.pkl"

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            raise MatrixError(f"unknown profile {name!r}; the matrix has: {', '.join(self.profiles)}") from None

    def max_gcc(self, cuda_version: str) -> Optional[int]:
        """Largest gcc major for an nvcc ``major.minor`` (None if the matrix has no row)."""
        return self.nvcc_max_gcc.get(".".join(cuda_version.split(".")[:2]))


class _Reader:
    """Typed access to nested keys that names the full key path in every error."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, key: str, why: str) -> MatrixError:
        return MatrixError(f"{self.path}: {key}: {why}")

    def get(self, node: Mapping[str, Any], key: str, where: str, kind: type | tuple, optional=False):
        full = f"{where}.{key}" if where else key
        if not isinstance(node, Mapping):
            raise self.fail(where or "<top>", "must be a mapping")
        value = node.get(key)
        if value is None:
            if optional:
                return None
            raise self.fail(full, "missing")
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(full, f"must be {want}, got {type(value).__name__} {value!r}")
        return value

    def version(self, node, key, where, optional=False) -> Optional[str]:
        value = self.get(node, key, where, (str, int, float), optional)
        if value is None:
            return None
        text = str(value)
        if not VERSION.match(text):
            raise self.fail(f"{where}.{key}", f"{text!r} is not a version like 12.6")
        return text


def _profile(r: _Reader, name: str, node: Mapping[str, Any]) -> Profile:
    where = f"profiles.{name}"
    cuda = r.version(node, "cuda", where, optional=True)
    py = r.get(node, "python", where, dict)
    cc = r.get(node, "compute_capability", where, dict, optional=cuda is None)
    if cuda is not None and cc is None:
        raise r.fail(f"{where}.compute_capability", "required for a CUDA profile")
    min_driver = r.version(node, "min_driver", where, optional=cuda is None)
    index = r.get(node, "index", where, str)
    if index != "pypi" and not index.startswith("https://"):
        raise r.fail(f"{where}.index", f"must be 'pypi' or an https:// URL, got {index!r}")
    profile = Profile(
        name=name,
        summary=r.get(node, "summary", where, str),
        torch=r.version(node, "torch", where),
        torchvision=r.version(node, "torchvision", where),
        cuda=cuda,
        index=index,
        python_min=r.version(py, "min", f"{where}.python"),
        python_max=r.version(py, "max", f"{where}.python"),
        cc_min=r.version(cc, "min", f"{where}.compute_capability") if cc else None,
        cc_max=r.version(cc, "max", f"{where}.compute_capability") if cc else None,
        min_driver=min_driver,
        disk_mib=r.get(node, "disk_mib", where, int),
        arch_list=r.get(node, "arch_list", where, str, optional=cuda is None) or "",
        host=bool(r.get(node, "host", where, bool, optional=True)),
        extras=tuple(str(e) for e in (r.get(node, "extras", where, list, optional=True) or ())),
    )
    if profile.host and cuda is not None:
        raise r.fail(f"{where}.cuda", "must be null for a host profile (the host torch's CUDA is read from it)")
    if cuda is not None:
        try:
            archs = parse_arch_list(profile.arch_list)
        except ValueError as exc:
            raise r.fail(f"{where}.arch_list", str(exc)) from None
        outside = [a for a, _ in archs if not profile.covers(a)]
        if outside:
            raise r.fail(f"{where}.arch_list", f"{', '.join(outside)} outside compute_capability")
    if cc and version_tuple(profile.cc_min) > version_tuple(profile.cc_max):
        raise r.fail(f"{where}.compute_capability", "min is above max")
    return profile


def _pins(r: _Reader, node: Any, where: str) -> dict[str, str]:
    if not isinstance(node, Mapping):
        raise r.fail(where, "must be a mapping of package name to exact version")
    out = {}
    for name, version in node.items():
        text = str(version)
        if not PIN.match(text) or isinstance(version, float):
            raise r.fail(f"{where}.{name}", f"{version!r} is not an exact version (quote it: \"2.2.6\")")
        out[str(name).lower()] = text
    return out


def parse(data: Any, path: str = "<matrix>") -> Matrix:
    """Validate an already-loaded matrix document."""
    r = _Reader(path)
    if not isinstance(data, Mapping):
        raise MatrixError(f"{path}: must be a YAML mapping")
    if r.get(data, "schema", "", int) != 1:
        raise r.fail("schema", "this dpdeploy reads schema 1")
    d2 = r.get(data, "detectron2", "", dict)
    commit = r.get(d2, "commit", "detectron2", str)
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise r.fail("detectron2.commit", "must be a full 40-hex commit id")
    d2_tree = r.get(d2, "tree_sha256", "detectron2", str, optional=True) or ""
    if d2_tree and not re.fullmatch(r"[0-9a-f]{64}", d2_tree):
        raise r.fail("detectron2.tree_sha256", "must be a 64-hex sha256 (build/source.py tree_hash)")
    build = r.get(data, "build", "", dict)
    mem_per_job = r.get(build, "mem_per_job_mib", "build", int)
    mem_reserve = r.get(build, "mem_reserve_mib", "build", int)
    if mem_per_job <= 0:
        raise r.fail("build.mem_per_job_mib", f"must be a positive number of MiB, got {mem_per_job}")
    if mem_reserve < 0:
        raise r.fail("build.mem_reserve_mib", f"must be 0 or more MiB, got {mem_reserve}")
    plat = r.get(data, "platform", "", dict)
    tested = r.get(plat, "tested_os", "platform", dict)
    gcc_table = r.get(data, "nvcc_max_gcc", "", dict)
    for key, value in gcc_table.items():
        if not VERSION.match(str(key)) or not isinstance(value, int):
            raise r.fail(f"nvcc_max_gcc.{key}", "rows must map 'major.minor' to a gcc major (int)")
    profiles_node = r.get(data, "profiles", "", dict)
    profiles = {name: _profile(r, name, node) for name, node in profiles_node.items()}
    auto = r.get(data, "auto", "", dict)
    auto_gpu = tuple(r.get(auto, "gpu", "auto", list))
    auto_no_gpu = r.get(auto, "no_gpu", "auto", str)
    for name in (*auto_gpu, auto_no_gpu):
        if name not in profiles:
            raise r.fail("auto", f"names unknown profile {name!r}")
    for name in (*auto_gpu, auto_no_gpu):
        if profiles[name].host:
            raise r.fail("auto", f"{name!r} is a host profile: it needs --python, so it is only chosen by name")
    for name in auto_gpu:
        if not profiles[name].is_cuda:
            raise r.fail("auto.gpu", f"{name!r} is not a CUDA profile")
    extras = {str(k): _pins(r, v, f"extras.{k}") for k, v in (r.get(data, "extras", "", dict, optional=True)
                                                                  or {}).items()}
    for p in profiles.values():
        unknown = [e for e in p.extras if e not in extras]
        if unknown:
            raise r.fail(f"profiles.{p.name}.extras", f"names unknown extras {', '.join(unknown)} "
                         f"(the matrix's extras: {', '.join(extras) or 'none'})")
    for p in profiles.values():
        if p.is_cuda and p.cuda not in {str(k) for k in gcc_table}:
            raise r.fail(f"profiles.{p.name}.cuda", f"{p.cuda} has no nvcc_max_gcc row")
    models = r.get(data, "models", "", dict)
    entries = r.get(models, "entries", "models", dict)
    for name, entry in entries.items():
        r.get(entry, "id", f"models.entries.{name}", int)
        if not re.fullmatch(r"[0-9a-f]{6}", str(r.get(entry, "md5_prefix", f"models.entries.{name}", str))):
            raise r.fail(f"models.entries.{name}.md5_prefix", "must be 6 hex digits")
        sha = r.get(entry, "sha256", f"models.entries.{name}", str, optional=True)
        if sha is not None and not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise r.fail(f"models.entries.{name}.sha256", "must be 64 hex digits or null")
        size = r.get(entry, "size", f"models.entries.{name}", int, optional=True)
        if size is not None and size <= 0:
            raise r.fail(f"models.entries.{name}.size", "must be a positive number of bytes or null")
        if (sha is None) != (size is None):
            raise r.fail(f"models.entries.{name}", "pin sha256 and size together (both known, or both null)")
    default_model = r.get(models, "default", "models", str)
    if default_model not in entries:
        raise r.fail("models.default", f"{default_model!r} is not among models.entries")
    samples = r.get(data, "samples", "", dict)
    for name, entry in samples.items():
        for key in ("package", "path"):
            r.get(entry, key, f"samples.{name}", str)
        if not re.fullmatch(r"[0-9a-f]{64}", r.get(entry, "sha256", f"samples.{name}", str)):
            raise r.fail(f"samples.{name}.sha256", "must be 64 hex digits")
    toolchains = r.get(data, "cuda_toolchain", "", dict)
    build_only = tuple(str(n) for n in (data.get("build_only") or []))
    known = set(data.get("build_tools") or {}) | {n for pins in toolchains.values() for n in (pins or {})}
    for name in build_only:
        if name not in known:
            raise r.fail("build_only", f"{name!r} is not a build_tools or cuda_toolchain pin")
    conda = r.get(data, "conda", "", dict)
    for key, kind in (("channels", list), ("channel_url", str), ("platform", str), ("cuda_packages", list),
                      ("compiler_package", str), ("virtual_glibc", str)):
        r.get(conda, key, "conda", kind)
    return Matrix(
        runtime=_pins(r, data.get("runtime"), "runtime"),
        build_tools=_pins(r, data.get("build_tools"), "build_tools"),
        cuda_toolchain={str(k): _pins(r, v, f"cuda_toolchain.{k}") for k, v in toolchains.items()},
        build_only=build_only,
        conda=conda,
        extras=extras,
        path=path,
        models=entries,
        default_model=default_model,
        zoo_url=r.get(models, "zoo_url", "models", str).rstrip("/"),
        samples=samples,
        raw=data,
        profiles=profiles,
        auto_gpu=auto_gpu,
        auto_no_gpu=auto_no_gpu,
        nvcc_max_gcc={str(k): v for k, v in gcc_table.items()},
        machines=tuple(r.get(plat, "machines", "platform", list)),
        tested_os={str(k): tuple(str(v) for v in vs) for k, vs in tested.items()},
        mem_per_job_mib=mem_per_job,
        mem_reserve_mib=mem_reserve,
        d2_repo=r.get(d2, "repo", "detectron2", str),
        d2_commit=commit,
        d2_tree=d2_tree,
        densepose_subdir=r.get(d2, "densepose_subdir", "detectron2", str),
    )


def read_yaml(path: str | Path, error: type[Exception], what: str) -> Any:
    """A YAML file's data; a missing or malformed file raises ``error`` naming it."""
    text = read_user_text(path, error, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None


def load(path: str | Path = DEFAULT_PATH) -> Matrix:
    """Read and validate the matrix file."""
    return parse(read_yaml(path, MatrixError, "matrix"), str(path))
