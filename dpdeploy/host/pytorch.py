"""The torch an existing interpreter carries (``--profile host``): asked from that interpreter,
never guessed from file names. Its answer is one JSON line (``ASK``)."""
from __future__ import annotations

import json
from typing import Optional

from dpdeploy.host.facts import HostTorch
from dpdeploy.runner import Runner, run

ASK = r"""
import json, os, platform, site, sys
out = {"python_version": platform.python_version(), "site_packages": site.getsitepackages(), "error": ""}
try:
    import torch
    out.update(torch=torch.__version__, cuda=torch.version.cuda or "")
    flags = getattr(torch._C, "_cuda_getArchFlags", None)
    out["arch_list"] = (flags() or "").split() if flags and out["cuda"] else []
    where = os.path.dirname(os.path.dirname(torch.__file__))
    if where not in out["site_packages"]:
        out["site_packages"].append(where)
    import torchvision
    out["torchvision"] = torchvision.__version__
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
print("DPDEPLOY-HOST-TORCH " + json.dumps(out))
"""
PREFIX = "DPDEPLOY-HOST-TORCH "


def parse(python: str, stdout: str) -> Optional[HostTorch]:
    """The interpreter's answer, None when it printed none."""
    line = next((x for x in stdout.splitlines() if x.startswith(PREFIX)), None)
    if line is None:
        return None
    data = json.loads(line[len(PREFIX):])
    return HostTorch(python=python, python_version=str(data.get("python_version", "")),
                     torch=str(data.get("torch", "")), torchvision=str(data.get("torchvision", "")),
                     cuda=str(data.get("cuda", "")), arch_list=tuple(data.get("arch_list", ())),
                     site_packages=tuple(data.get("site_packages", ())), error=str(data.get("error", "")))


def probe(python: str, runner: Runner = run) -> HostTorch:
    """Ask ``python`` for its torch (importing torch can take seconds)."""
    done = runner([python, "-c", ASK], timeout=300)
    found = parse(python, done.stdout) if done is not None else None
    if found is not None:
        return found
    last = (done.stderr.strip().splitlines() or [""])[-1] if done is not None else ""
    why = "it could not be run" if done is None else f"it exited {done.returncode}: {last}"
    return HostTorch(python=python, python_version="", error=f"{python} did not answer ({why})")
