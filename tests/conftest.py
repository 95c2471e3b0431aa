import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from dpdeploy.plan import matrix as matrix_mod
from dpdeploy.host.facts import Facts

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def facts_fixture(name: str, **changes) -> Facts:
    data = json.loads((FIXTURES / "facts" / f"{name}.json").read_text())
    data.update(changes)
    return Facts.from_dict(data)


@pytest.fixture(scope="session")
def matrix():
    return matrix_mod.load()


# What the build tests need in an env: torch (the matrix's pin) + build tools + PyPI's CUDA 13.0
# toolchain wheels matching torch 2.14.1's cuda-toolkit==13.0.3 (the env step installs the same).
TORCH_ENV_PINS = ["ninja", "setuptools", "wheel", "nvidia-cuda-nvcc==13.0.88", "nvidia-cuda-crt==13.0.88",
                  "nvidia-nvvm==13.0.88", "nvidia-cuda-cccl==13.0.85", "nvidia-cuda-runtime==13.0.96"]


@pytest.fixture(scope="session")
def torch_env(tmp_path_factory, matrix):
    """A venv with torch, torchvision and the CUDA toolchain wheels, made once per session (minutes).

    DPDEPLOY_TEST_TORCH_ENV=<prefix> reuses an existing one instead.
    """
    import os
    import subprocess
    import sys

    given = os.environ.get("DPDEPLOY_TEST_TORCH_ENV")
    if given:
        return Path(given)
    prefix = tmp_path_factory.mktemp("torch-env") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(prefix)], check=True)
    cu130 = matrix.profile("cu130")
    # torchvision too: detectron2.layers imports torchvision.ops, and the build's verification imports it
    subprocess.run([str(prefix / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    f"torch=={cu130.torch}", f"torchvision=={cu130.torchvision}", *TORCH_ENV_PINS], check=True)
    return prefix


D2_SOURCE = os.environ.get("DPDEPLOY_TEST_D2_SOURCE", "")


@dataclass(frozen=True)
class Deployment:
    home: Path          # the state root it was deployed into
    prefix: Path        # the DensePose env
    setup_seconds: float
    setup_output: str


def invoke(*args: str, home: Path, timeout: float = 3600) -> subprocess.CompletedProcess:
    """A real `invoke` process in the checkout, with its own state root."""
    env = {**os.environ, "NO_COLOR": "1", "DPDEPLOY_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture(scope="session")
def deployment(tmp_path_factory) -> Deployment:
    """DensePose deployed for real, once per session, as a user does it: `invoke setup --source`
    from the pinned detectron2 source (DPDEPLOY_TEST_D2_SOURCE: a tarball or a directory; .ci/run
    points it at ../shared/sources) into a fresh state root, on this host's plan (the CPU plan here)."""
    if not D2_SOURCE:
        pytest.skip("needs DPDEPLOY_TEST_D2_SOURCE (the pinned detectron2 source: a git-archive tarball or a tree)")
    home = tmp_path_factory.mktemp("deployment") / "home"
    started = time.monotonic()
    done = invoke("setup", "--source", D2_SOURCE, home=home)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    [prefix] = (home / "envs").iterdir()
    return Deployment(home, prefix, seconds, done.stdout)


@pytest.fixture(scope="session")
def ray_d2_env(request) -> Path:
    """A prefix with detectron2 + DensePose + Ray: DPDEPLOY_TEST_RAY_ENV when set, else the profile
    cpu-ray set up in the session's deployment's state root (its detectron2 wheels come from that
    root's wheel cache: same torch, same Python)."""
    given = os.environ.get("DPDEPLOY_TEST_RAY_ENV")
    if given:
        return Path(given)
    dep = request.getfixturevalue("deployment")
    done = invoke("setup", "--profile", "cpu-ray", "--only", "env,build", "--source", D2_SOURCE, home=dep.home)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    return dep.home / "envs" / "cpu-ray"


@pytest.fixture(scope="session")
def d2_env(request) -> Path:
    """A prefix with detectron2 + DensePose: DPDEPLOY_TEST_D2_ENV when set, else the session's deployment."""
    given = os.environ.get("DPDEPLOY_TEST_D2_ENV")
    return Path(given) if given else request.getfixturevalue("deployment").prefix
