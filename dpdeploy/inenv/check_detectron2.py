"""Run by the env's python: detectron2's compiled ops work. Prints one JSON line.

ROIAlign on a linear image is exact (bilinear interpolation of a linear function), so the
expected values follow by hand: x[i, j] = 8 i + j, box (0, 0, 4, 4), aligned, 2x2 bins of
size 2 centred at (0.5, 2.5) -> 8 * 0.5 + 0.5 = 4.5, 6.5, 20.5, 22.5.
nms_rotated: boxes 0 and 1 overlap (same centre and size, 10 degrees apart, IoU > 0.5),
box 2 is far away -> keeps [0, 2].
"""
import importlib.util
import json

import torch
from detectron2 import _C
from detectron2.layers import ROIAlign, nms_rotated

ROI_EXPECTED = [4.5, 6.5, 20.5, 22.5]
NMS_EXPECTED = [0, 2]


def roi_align(device):
    image = torch.arange(64, dtype=torch.float32, device=device).reshape(1, 1, 8, 8)
    boxes = torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]], device=device)
    return ROIAlign((2, 2), 1.0, 0, aligned=True)(image, boxes).flatten().cpu().tolist()


def nms(device):
    boxes = torch.tensor([[5.0, 5.0, 4.0, 4.0, 0.0], [5.0, 5.0, 4.0, 4.0, 10.0], [20.0, 20.0, 4.0, 4.0, 0.0]],
                         device=device)
    scores = torch.tensor([0.9, 0.8, 0.7], device=device)
    return nms_rotated(boxes, scores, 0.5).cpu().tolist()


out = {"c_path": _C.__file__, "torch": torch.__version__, "problems": [],
       "densepose": importlib.util.find_spec("densepose") is not None}
if roi_align("cpu") != ROI_EXPECTED:
    out["problems"].append(f"ROIAlign on CPU gave {roi_align('cpu')}, expected {ROI_EXPECTED}")
if nms("cpu") != NMS_EXPECTED:
    out["problems"].append(f"nms_rotated on CPU kept {nms('cpu')}, expected {NMS_EXPECTED}")
if not out["densepose"]:
    out["problems"].append("the densepose package is not importable")
if torch.cuda.is_available():
    got = roi_align("cuda")
    out["gpu"] = f"ROIAlign on {torch.cuda.get_device_name(0)}: {got}"
    if got != ROI_EXPECTED:
        out["problems"].append(f"ROIAlign on the GPU gave {got}, expected {ROI_EXPECTED}")
print(json.dumps(out))
