import json
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
