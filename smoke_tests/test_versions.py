"""The env holds what the lock, the matrix and the build stamp say."""
import hashlib
import importlib.metadata as md
import re
from pathlib import Path

from conftest import read_stamp

from dpdeploy.records import build_stamp, env_stamp

REPO = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def base_version(version: str) -> str:
    return version.split("+", 1)[0]


def lock_pins(text: str) -> dict[str, str]:
    """name -> version for each pin of a pip lock that applies to this interpreter."""
    from packaging.markers import Marker
    from packaging.utils import canonicalize_name

    pins = {}
    for line in text.splitlines():
        match = PIN.match(line.strip())
        if match and (match.group(3) is None or Marker(match.group(3)).evaluate()):
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def test_torch_and_torchvision_match_plan_and_matrix(plan, matrix, prefix):
    import torch
    import torchvision

    profile = matrix["profiles"][plan["profile"]]
    if profile.get("host"):   # the host's own torch, as the plan read it (the matrix holds the floor)
        assert torch.__version__ == plan["torch"] and torchvision.__version__ == plan["torchvision"]
        host_dirs = read_stamp(env_stamp, prefix).host_site_packages
        assert any(torch.__file__.startswith(d.rstrip("/") + "/") for d in host_dirs), \
            f"torch imported from {torch.__file__}, not from the host ({', '.join(host_dirs)})"
        return
    assert base_version(torch.__version__) == plan["torch"] == profile["torch"]
    assert base_version(torchvision.__version__) == plan["torchvision"] == profile["torchvision"]
    if plan["cuda"]:
        assert torch.version.cuda == plan["cuda"], f"torch is built for CUDA {torch.version.cuda}, plan wants {plan['cuda']}"


def test_installed_packages_match_the_lock(prefix):
    from packaging.utils import canonicalize_name

    stamp = read_stamp(env_stamp, prefix)
    lock = Path(stamp.lock) if Path(stamp.lock).is_absolute() else REPO / stamp.lock
    text = lock.read_text(encoding="utf-8")
    assert hashlib.sha256(text.encode()).hexdigest() == stamp.lock_sha256, f"{lock} changed since the env was made"
    installed = {}
    for dist in md.distributions():   # the first along the import path is what is imported (a host env's own)
        installed.setdefault(canonicalize_name(dist.metadata["Name"]), dist.version)
    dropped = {canonicalize_name(n) for n in stamp.dropped}   # build-only pins a runtime env left out on purpose
    wrong = {name: (want, installed.get(name)) for name, want in lock_pins(text).items()
             if name not in dropped and base_version(installed.get(name) or "") != base_version(want)}
    assert not wrong, "lock pin != installed (want, have): " + ", ".join(f"{n} {w}" for n, w in sorted(wrong.items()))


def test_detectron2_is_the_pinned_commit(plan, matrix, prefix):
    import detectron2._C as c_ext

    stamp = read_stamp(build_stamp, prefix)
    assert stamp.commit == plan["detectron2_commit"] == matrix["detectron2"]["commit"]
    so = Path(c_ext.__file__)
    assert so.resolve() == Path(stamp.c_path).resolve(), f"imported {so}, the build installed {stamp.c_path}"
    assert hashlib.sha256(so.read_bytes()).hexdigest() == stamp.c_sha256, f"{so} differs from the built one"


def test_densepose_imports():
    import densepose  # noqa: F401
    from densepose import add_densepose_config  # noqa: F401
