"""What an env holds, read from its files without running its interpreter: its site-packages
(with the host folders a host-torch env overlays, listed in its ``_dpdeploy_host.pth``) and the
torch it imports (version and the CUDA it was built with)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


HOST_PTH = "_dpdeploy_host.pth"   # in a host-torch env's site-packages: one host folder a line


class EnvError(Exception):
    """The env is missing or lacks what is asked for: what, and the next step."""


@dataclass(frozen=True)
class TorchInfo:
    python: str        # major.minor
    torch: str         # torch.__version__, e.g. 2.14.1+cu130
    torch_cuda: str    # torch.version.cuda; "" for a CPU-only torch


def site_packages_dirs(prefix: str | Path) -> list[Path]:
    """Every site-packages folder the env imports from, its own first (lib/pythonX.Y; lib64 too on
    some systems), then the host folders of a host-torch env."""
    root = Path(prefix)
    own = sorted(p for p in [*root.glob("lib/python3*/site-packages"), *root.glob("lib64/python3*/site-packages")]
                 if p.is_dir())
    return own + [h for h in host_dirs(prefix) if h.is_dir() and h not in own]


def host_dirs(prefix: str | Path) -> list[Path]:
    """The host folders a host-torch env overlays (empty for an env with its own torch)."""
    out = []
    for pth in sorted(Path(prefix).glob(f"lib/python3*/site-packages/{HOST_PTH}")):
        out += [Path(line) for line in pth.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith(("#", "import"))]
    return out


def _find(prefix: str | Path, rel: str) -> Path | None:
    """The first ``rel`` (e.g. torch/version.py) along the env's import path."""
    return next((d / rel for d in [site_packages(prefix), *site_packages_dirs(prefix)] if (d / rel).is_file()), None)


def site_packages(prefix: str | Path) -> Path:
    """The env's site-packages (a venv has exactly one lib/pythonX.Y)."""
    found = sorted(Path(prefix).glob("lib/python3.*/site-packages"))
    if not found:
        raise EnvError(f"no site-packages under {prefix}/lib: is {prefix} a Python env? (next: run `invoke env` first)")
    return found[-1]


def torch_info(prefix: str | Path) -> TorchInfo:
    """Python major.minor and torch's version / CUDA version, from ``torch/version.py``."""
    site = site_packages(prefix)
    version_py = _find(prefix, "torch/version.py")
    if version_py is None:
        raise EnvError(f"torch is not installed in {prefix} (no {site / 'torch' / 'version.py'}); "
                       "next: run `invoke env` first")
    text = version_py.read_text(encoding="utf-8")
    version = re.search(r"^__version__\s*=\s*'([^']+)'", text, re.M)
    cuda = re.search(r"^cuda(?::[^=]*)?=\s*(?:'([^']*)'|None)", text, re.M)
    return TorchInfo(site.parent.name.replace("python", ""), version.group(1) if version else "unknown",
                     (cuda.group(1) or "") if cuda else "")


def torchvision_version(prefix: str | Path) -> str:
    """torchvision's version from its ``version.py``; "" when it is not installed."""
    version_py = _find(prefix, "torchvision/version.py")
    if version_py is None:
        return ""
    try:
        match = re.search(r"^__version__\s*=\s*'([^']+)'", version_py.read_text(encoding="utf-8"), re.M)
    except OSError:
        return ""
    return match.group(1) if match else ""
