"""One arch-coverage rule (dpdeploy/plan/archs.py), asked by the build's verification (from the
``_C`` fatbin) and by doctor/verify (from the build stamp): both must give the same answer."""
from types import SimpleNamespace

import pytest

from dpdeploy.build.verification import arch_problems
from dpdeploy.diagnose.checks import arch_check
from dpdeploy.host.facts import Gpu
from dpdeploy.plan.archs import Arch, covers, parse_archs

from .test_fatbin import elf, fatbin
from .deployed import stamp

SM, PTX = "sm", "ptx"

# (compiled targets, GPU compute capability, runs)
TABLE = [
    ([(SM, 90)], "9.0", True),
    ([(SM, 80)], "8.6", True),                  # a cubin runs on a higher minor of its major
    ([(SM, 86)], "8.0", False),                 # ... not on a lower minor
    ([(SM, 80)], "9.0", False),                 # ... nor on another major
    ([(SM, 90)], "12.0", False),
    ([(PTX, 80)], "9.0", True),                 # PTX JIT-compiles for any newer GPU
    ([(PTX, 90)], "8.9", False),                # ... not for an older one
    ([(SM, 90), (PTX, 90)], "12.0", True),
    ([(SM, 100)], "10.3", True),
    ([(SM, 120), (SM, 121)], "12.0", True),
    ([(SM, 121)], "12.0", False),
    ([], "9.0", False),
    ([(SM, 90)], "unknown", False),
]


@pytest.mark.parametrize("targets, cc, runs", TABLE)
def test_covers(targets, cc, runs):
    assert covers({Arch(k, sm) for k, sm in targets}, cc) is runs


@pytest.mark.parametrize("items, archs", [
    (["sm_90", "compute_90"], {Arch(SM, 90), Arch(PTX, 90)}),
    (["sm_100a"], {Arch(SM, 100)}),
    ("7.5;8.0 12.0+PTX", {Arch(SM, 75), Arch(SM, 80), Arch(SM, 120), Arch(PTX, 120)}),
    (["8.9", "9.0+PTX"], {Arch(SM, 89), Arch(SM, 90), Arch(PTX, 90)}),
    (["junk", ""], set()),
])
def test_parse_archs(items, archs):
    assert parse_archs(items) == archs


@pytest.mark.parametrize("targets, cc, runs", [row for row in TABLE if row[0] and row[1] != "unknown"])
def test_build_verification_and_doctor_agree(tmp_path, targets, cc, runs):
    """The same _C: its fatbin read by the build's verification, its names by doctor's stamp check."""
    so = tmp_path / "_C.so"
    so.write_bytes(elf({".nv_fatbin": fatbin([(2 if k == SM else 1, sm, b"code") for k, sm in targets])}))
    plan = SimpleNamespace(force_cuda=True, torch_cuda_arch_list="", gpus=[{"compute_capability": cc}])
    names, gaps = arch_problems(str(so), plan)
    doctor = arch_check(stamp(names), [Gpu(0, "GPU", cc, 16000)], is_cuda=True)
    assert (gaps == []) is runs
    assert (doctor.status == "ok") is runs
