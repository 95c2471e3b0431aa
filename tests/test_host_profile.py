"""--profile host: the plan reads the torch of --python and refuses one that cannot serve; the env
overlays the host's packages (a .pth) and records it; the refusals name the reason."""
import json
import sys
from pathlib import Path

import pytest

from dpdeploy.envs import site
from dpdeploy.host import pytorch
from dpdeploy.plan import hosttorch
from dpdeploy.plan.resolve import PlanError, resolve
from dpdeploy.plan.settings import resolve as settings
from dpdeploy.diagnose import drift
from dpdeploy.records import env_stamp, versions
from dpdeploy.runner import Completed
from dpdeploy.steps import env as env_step
from dpdeploy.steps.context import StepContext

from .conftest import facts_fixture, invoke
from .deployed import FakeStream, fake_install

PY = "/opt/conda/bin/python"
CU130_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]


def host_torch(**changes) -> dict:
    return {"python": PY, "python_version": "3.11.7", "torch": "2.14.1+cu130", "torchvision": "0.29.1",
            "cuda": "13.0", "arch_list": CU130_ARCHS, "site_packages": ["/opt/conda/lib/python3.11/site-packages"],
            **changes}


def plan_for(matrix, tmp_path, fixture="h100", python=PY, **torch):
    facts = facts_fixture(fixture, host_torch=host_torch(**torch))
    s = settings({"home": str(tmp_path / "home"), "profile": "host", "python": python}, env={})
    return facts, resolve(facts, matrix, s)


def refusal(matrix, tmp_path, **kw) -> str:
    with pytest.raises(PlanError) as err:
        plan_for(matrix, tmp_path, **kw)
    return err.value.rejected["host"]


@pytest.mark.parametrize("archs, cc, ok", [
    (["sm_80"], "8.6", True),            # a cubin runs on later minors of its major
    (["sm_86"], "8.0", False),
    (["sm_80", "sm_90"], "10.0", False),  # no PTX: a new major has nothing to run
    (["sm_80", "compute_90"], "10.0", True),
    (["sm_90a"], "9.0", True),
    (["sm_90a"], "9.5", False),          # arch-specific code runs on that arch only
    (CU130_ARCHS, "12.0", True),
    (["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"], "12.0", False),
])
def test_torch_arch_list_covers(archs, cc, ok):
    assert hosttorch.covers(tuple(archs), cc) is ok


def test_gpu_plan_uses_the_host_torch_and_the_gpus_present(matrix, tmp_path):
    _, plan = plan_for(matrix, tmp_path)
    assert (plan.profile, plan.torch, plan.cuda, plan.device) == ("host", "2.14.1+cu130", "13.0", "cuda")
    assert plan.python == PY and plan.force_cuda and plan.torch_cuda_arch_list == "9.0+PTX"
    assert plan.toolchain.cuda_source == "system"   # the image's nvcc 13.0
    assert any("used as they are, not installed" in r for r in plan.reasons)


def test_gpu_less_host_builds_for_the_torch_archs_with_its_nvcc(matrix, tmp_path):
    facts = facts_fixture("h100", gpus=[], host_torch=host_torch())
    plan = resolve(facts, matrix, settings({"home": str(tmp_path), "profile": "host", "python": PY}, env={}))
    assert plan.device == "cpu" and plan.force_cuda
    assert plan.torch_cuda_arch_list == "7.5;8.0;8.6;9.0;10.0;12.0"


def test_refuses_an_interpreter_without_torch(matrix, tmp_path):
    why = refusal(matrix, tmp_path, torch="", torchvision="", error="ModuleNotFoundError: No module named 'torch'")
    assert why.startswith(f"no torch in {PY}") and "No module named 'torch'" in why


def test_refuses_a_cpu_only_torch_on_a_gpu_host(matrix, tmp_path):
    why = refusal(matrix, tmp_path, cuda="", arch_list=[])
    assert "CPU-only build" in why and "H100" in why


def test_refuses_an_arch_list_that_misses_the_gpu(matrix, tmp_path):
    why = refusal(matrix, tmp_path, fixture="rtx5090", arch_list=["sm_50", "sm_80", "sm_90"])
    assert "misses GPU 0 NVIDIA GeForce RTX 5090 (sm_120)" in why


def test_refuses_a_torch_too_old_and_a_gpu_host_without_nvcc(matrix, tmp_path):
    assert "older than 2.0" in refusal(matrix, tmp_path, torch="1.13.1+cu117")
    assert "no CUDA 12.4 nvcc" in refusal(matrix, tmp_path, cuda="12.4")   # the image has nvcc 13.0
    assert "needs --python" in refusal(matrix, tmp_path, python="")


def test_probe_asks_the_interpreter_itself():
    """The real question, asked of the tools venv's Python (no torch there)."""
    found = pytorch.probe(sys.executable)
    assert found.python_version and found.torch == "" and "torch" in found.error
    canned = Completed((), 0, "noise\n" + pytorch.PREFIX + json.dumps(host_torch()) + "\n", "")
    parsed = pytorch.probe(PY, runner=lambda argv, **kw: canned)
    assert parsed.arch_list == tuple(CU130_ARCHS) and parsed.cuda == "13.0"
    assert "did not answer" in pytorch.probe("/nonexistent/python").error


def test_env_overlays_the_host_packages_and_records_them(matrix, tmp_path, monkeypatch):
    host_site = tmp_path / "host" / "lib" / "python3.11" / "site-packages"
    (host_site / "torch").mkdir(parents=True)
    (host_site / "torch" / "version.py").write_text("__version__ = '2.14.1+cu130'\ncuda: Optional[str] = '13.0'\n")
    (host_site / "torchvision").mkdir()
    (host_site / "torchvision" / "version.py").write_text("__version__ = '0.29.1'\n")
    facts = facts_fixture("nogpu", host_torch=host_torch(site_packages=[str(host_site)]))
    s = settings({"home": str(tmp_path / "home"), "prefix": str(tmp_path / "env"), "profile": "host",
                  "python": PY}, env={})
    ctx = StepContext(resolve(facts, matrix, s), facts, s, matrix, None, False, lambda line: None)
    fake = FakeStream()

    def stream(argv, **kw):   # venv makes bin/python and site-packages; pip installs no torch into a host env
        if "pip" in argv:
            fake.calls.append(list(argv))
            fake_install(Path(argv[0]).parent.parent, Path(argv[argv.index("-r") + 1]))
            return 0
        fake(argv, **kw)
        (Path(argv[-1]) / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
        return 0

    monkeypatch.setattr(env_step, "stream", stream)
    result = env_step.run(ctx)
    assert result.status == "done", result.output
    assert fake.calls[0][:3] == [PY, "-m", "venv"] and fake.calls[1][-1].endswith("env/locks/host.txt")
    pth = tmp_path / "env" / "lib" / "python3.11" / "site-packages" / site.HOST_PTH
    assert str(host_site) in pth.read_text().splitlines()
    stamp = env_stamp.read(tmp_path / "env")
    assert (stamp.host_python, stamp.torch, stamp.torch_cuda) == (PY, "2.14.1+cu130", "13.0")
    assert list(stamp.host_site_packages) == [str(host_site)]
    assert {"name": "torch from", "value": f"the host: {PY} (not installed by dpdeploy)",
            "source": str(env_stamp.path(tmp_path / "env"))} in versions.to_dicts(versions.collect(tmp_path / "env"))
    assert drift.host_torch_check(s.prefix, stamp).status == "ok"
    (host_site / "torch" / "version.py").write_text("__version__ = '2.15.0'\ncuda: Optional[str] = None\n")
    moved = drift.host_torch_check(s.prefix, stamp)
    assert moved.status == "fail" and "the host torch is now 2.15.0, the env was made over 2.14.1+cu130" in moved.what
    (host_site / "torch" / "version.py").write_text("__version__ = '2.14.1+cu130'\ncuda: Optional[str] = '13.0'\n")
    assert env_step.run(ctx).status == "up-to-date"
    changed = StepContext(ctx.plan, facts_fixture("nogpu", host_torch=host_torch(torch="2.15.0")), s, matrix, None)
    assert env_step.prefix_state(Path(s.prefix), env_step.Wanted(
        "pip", stamp.lock, stamp.lock_sha256, "host", stamp.python, PY, changed.facts.host_torch.torch)) == "ours"


def test_plan_cli_refuses_an_interpreter_without_torch(tmp_path):
    done = invoke("plan", "--profile", "host", "--python", sys.executable, home=tmp_path / "home", timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"host: no torch in {sys.executable}" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "home").exists()
