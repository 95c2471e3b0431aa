"""What an env holds, read from its files without running its interpreter: its site-packages
and the torch installed there (version and the CUDA it was built with)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


class EnvError(Exception):
    """The env is missing or lacks what is asked for: what, and the next step."""


@dataclass(frozen=True)
class TorchInfo:
    python: str        # major.minor
    torch: str         # torch.__version__, e.g. 2.14.1+cu130
    torch_cuda: str    # torch.version.cuda; "" for a CPU-only torch


def site_packages_dirs(prefix: str | Path) -> list[Path]:
    """Every site-packages folder of the env (lib/pythonX.Y; lib64 too on some systems)."""
    root = Path(prefix)
    return sorted(p for p in [*root.glob("lib/python3*/site-packages"), *root.glob("lib64/python3*/site-packages")]
                  if p.is_dir())


def site_packages(prefix: str | Path) -> Path:
    """The env's site-packages (a venv has exactly one lib/pythonX.Y)."""
    found = sorted(Path(prefix).glob("lib/python3.*/site-packages"))
    if not found:
        raise EnvError(f"no site-packages under {prefix}/lib: is {prefix} a Python env? (next: run `invoke env` first)")
    return found[-1]


def torch_info(prefix: str | Path) -> TorchInfo:
    """Python major.minor and torch's version / CUDA version, from ``torch/version.py``."""
    site = site_packages(prefix)
    version_py = site / "torch" / "version.py"
    if not version_py.is_file():
        raise EnvError(f"torch is not installed in {prefix} (no {version_py}); next: run `invoke env` first")
    text = version_py.read_text(encoding="utf-8")
    version = re.search(r"^__version__\s*=\s*'([^']+)'", text, re.M)
    cuda = re.search(r"^cuda(?::[^=]*)?=\s*(?:'([^']*)'|None)", text, re.M)
    return TorchInfo(site.parent.name.replace("python", ""), version.group(1) if version else "unknown",
                     (cuda.group(1) or "") if cuda else "")


def torchvision_version(prefix: str | Path) -> str:
    """torchvision's version from its ``version.py``; "" when it is not installed."""
    version_py = site_packages(prefix) / "torchvision" / "version.py"
    try:
        match = re.search(r"^__version__\s*=\s*'([^']+)'", version_py.read_text(encoding="utf-8"), re.M)
    except OSError:
        return ""
    return match.group(1) if match else ""
