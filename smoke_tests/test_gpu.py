"""The GPU side: torch sees the planned GPUs, and detectron2's _C has code for each of them."""
import pytest

pytestmark = pytest.mark.gpu


def test_torch_sees_the_planned_gpus(plan):
    import torch

    if plan["device"] != "cuda":
        pytest.skip(f"the plan runs on the CPU (profile {plan['profile']})")
    assert torch.cuda.device_count() >= len(plan["gpus"]), (
        f"torch sees {torch.cuda.device_count()} GPU(s), the plan was made for {len(plan['gpus'])}")
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    for gpu in plan["gpus"]:
        assert gpu["name"] in names, f"planned GPU {gpu['name']} not among {names}"


def test_c_archs_cover_the_visible_gpus(plan):
    """The archs in the imported _C's fatbinary (dpdeploy.build.fatbin, the reader `invoke build`
    uses) cover the plan's arch list and every visible GPU."""
    import detectron2._C as c_ext
    import torch

    from dpdeploy.build.fatbin import compiled_archs
    from dpdeploy.plan.archs import coverage_gaps

    archs = compiled_archs(c_ext.__file__)
    ccs = [".".join(map(str, torch.cuda.get_device_capability(i))) for i in range(torch.cuda.device_count())]
    gaps = coverage_gaps(archs, plan["torch_cuda_arch_list"], ccs)
    assert not gaps, f"{c_ext.__file__} has {sorted(map(str, archs))}; missing code for {gaps}"


def test_a_c_kernel_runs_on_each_gpu():
    """ROIAlign from _C on every GPU: 'no kernel image is available' fails here."""
    import torch
    from detectron2.layers import ROIAlign

    for i in range(torch.cuda.device_count()):
        dev = torch.device("cuda", i)
        feats = torch.arange(16.0, device=dev).reshape(1, 1, 4, 4)
        rois = torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]], device=dev)
        out = ROIAlign((2, 2), 1.0, 0, aligned=True)(feats, rois)
        assert out.shape == (1, 1, 2, 2) and torch.isfinite(out).all()
