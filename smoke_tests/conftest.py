"""Smoke tests of a deployed DensePose env. They run INSIDE that env:

    <prefix>/bin/python -m pytest smoke_tests        # what `invoke smoke` runs, from the repo root

`invoke smoke` sets these (to run the suite by hand, export them yourself):

| variable | what |
| --- | --- |
| ``DPDEPLOY_PLAN_JSON`` | the plan (``invoke plan --json``): profile, torch, device, gpus, prefix, arch list |
| ``DPDEPLOY_HOME`` | the state root |
| ``DPDEPLOY_MATRIX`` | ``env/matrix.yml`` (models, samples, pins) |
| ``DPDEPLOY_MODEL`` | the model (config) to run |
| ``DPDEPLOY_WEIGHTS`` | its verified weights file; empty = none: the pipeline check with a synthetic checkpoint |
| ``DPDEPLOY_SMOKE_OUT`` | where the predict outputs go (default: a pytest temp dir) |
| ``PYTHONPATH`` | the repository root, for ``dpdeploy.inenv`` (the predict worker) |
| ``REQUIRE_GPU=1`` | ``gpu`` tests FAIL instead of skipping when no GPU is visible (GPU CI runners) |

Which DensePose check ran is printed, is part of the test id (``[real-weights]`` or
``[pipeline-check-without-real-weights]``) and is the JUnit testsuite property ``densepose_check``.
Nothing here imports torch at collection time, so the GPU gate works in any interpreter.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import pytest

# Test id and words for each DensePose check (the JUnit property `invoke smoke` reports).
CHECKS = {
    "real": ("real-weights", "DensePose with the real weights"),
    "synthetic": ("pipeline-check-without-real-weights", "pipeline check without real weights (synthetic checkpoint)"),
}


def gpu_gate(require_gpu: bool, visible: int, why_none: str) -> Optional[tuple[str, str]]:
    """What a `gpu` test does: None = run it, else ("skip" | "fail", reason)."""
    if visible > 0:
        return None
    reason = f"no GPU visible to torch ({why_none})"
    if require_gpu:
        return "fail", f"REQUIRE_GPU=1 but {reason}"
    return "skip", reason


def visible_gpus() -> tuple[int, str]:
    """(GPUs torch can use, why none) in this interpreter."""
    try:
        import torch
    except ImportError as exc:
        return 0, f"torch is not importable here: {exc}"
    if not torch.cuda.is_available():
        cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
        return 0, "torch.cuda.is_available() is False" + (f", CUDA_VISIBLE_DEVICES={cvd!r}" if cvd is not None else "")
    return torch.cuda.device_count(), ""


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a visible NVIDIA GPU (skips without one; REQUIRE_GPU=1 fails)")


def weights_kind() -> str:
    path = os.environ.get("DPDEPLOY_WEIGHTS", "")
    return "real" if path and Path(path).is_file() else "synthetic"


def pytest_generate_tests(metafunc):
    if "densepose_check" in metafunc.fixturenames:
        kind = weights_kind()
        metafunc.parametrize("densepose_check", [kind], ids=[CHECKS[kind][0]])


def pytest_report_header(config):
    return f"dpdeploy smoke: DensePose check = {CHECKS[weights_kind()][1]}"


@pytest.fixture(scope="session", autouse=True)
def _record_check(record_testsuite_property):
    record_testsuite_property("densepose_check", CHECKS[weights_kind()][1])


@pytest.fixture(autouse=True)
def _gpu_gate(request, _record_check):
    """Skip (or with REQUIRE_GPU=1 fail) `gpu` tests when torch sees no GPU (after the property is recorded)."""
    if request.node.get_closest_marker("gpu") is None:
        return
    count, why = visible_gpus()
    decision = gpu_gate(os.environ.get("REQUIRE_GPU") == "1", count, why)
    if decision:
        action, reason = decision
        (pytest.fail if action == "fail" else pytest.skip)(reason)


def _need_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the suite with `invoke smoke` (or export it, see smoke_tests/conftest.py)")
    return value


@pytest.fixture(scope="session")
def plan() -> dict:
    return json.loads(Path(_need_env("DPDEPLOY_PLAN_JSON")).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def matrix() -> dict:
    import yaml  # PyYAML: in the env through omegaconf/hydra-core (detectron2's requirements)

    return yaml.safe_load(Path(_need_env("DPDEPLOY_MATRIX")).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def prefix(plan) -> Path:
    return Path(plan["prefix"])


def read_stamp(record, prefix: Path):
    """A stamp through its record module (``dpdeploy.records.env_stamp``/``build_stamp``), or skip
    naming it: an env not made by `invoke setup` has none."""
    stamp = record.read(prefix)
    if stamp is None:
        pytest.skip(f"no {record.FILE} in {prefix}: this env was not made by `invoke setup` (env/build steps)")
    return stamp
