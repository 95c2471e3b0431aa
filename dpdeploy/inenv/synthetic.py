"""A checkpoint whose detector fires, for checking the pipeline without the real weights.

Randomly initialised weights detect nobody (seen here, even at min score 0), so nothing
downstream of the detector would run. This recipe keeps the random init (seeded) and then
- zeroes the RPN's anchor-delta weights and sets their biases to stretch every anchor into a
  person-shaped box (STRETCH_W x wider, STRETCH_H x taller: bare anchors are 32-512 px
  squares and slivers, too small to see the charts on); the objectness weights stay random
  (so which anchors win depends on the image) and get a positive bias;
- zeroes the box head's regression deltas: detections are those proposals;
- zeroes the class-score weights and biases the logits: every proposal is a "person" with
  score sigmoid(2 * PERSON_LOGIT) = 0.95 (above DensePose's default 0.8 display threshold).
- scales the DensePose predictor's U and V layers down (UV_SCALE) around a 0.5 bias: a random
  head regresses U/V in the thousands (measured: -3819..961), the charts are defined on 0..1.
The rest of the DensePose head stays random: its I/U/V maps are noise of the right shapes and ranges.
The result is a pipeline check, never a model: results and reports must say "synthetic".

Runs inside the deployed env (imports torch and detectron2). Saved with detectron2's own
checkpointer, so the predictor loads it exactly like a model-zoo file.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
from pathlib import Path

RECIPE = 2              # bump when the recipe changes: cached files carry it in their name
SEED = 0
OBJECTNESS_BIAS = 4.0   # RPN logit: every anchor a confident proposal
PERSON_LOGIT = 1.5      # +1.5 person / -1.5 background -> softmax 0.9526
STRETCH_W, STRETCH_H = 3.0, 6.0
UV_SCALE = 1e-5         # random U/V outputs of |x| < 50000 stay inside 0.5 +- 0.5


def cache_name(model: str) -> str:
    return f"synthetic-{model}-r{RECIPE}-s{SEED}.pth"


def build(cfg):
    """The model of ``cfg`` (on the CPU) with the recipe above applied."""
    import torch
    from detectron2.modeling import build_model

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(SEED)
    model = build_model(cfg)
    rpn = model.proposal_generator.rpn_head
    box = model.roi_heads.box_predictor
    with torch.no_grad():
        rpn.anchor_deltas.weight.zero_()
        deltas = rpn.anchor_deltas.bias.view(-1, 4)   # (dx, dy, dw, dh) per anchor, log-scale sizes
        deltas.zero_()
        deltas[:, 2] = math.log(STRETCH_W)
        deltas[:, 3] = math.log(STRETCH_H)
        rpn.objectness_logits.bias.fill_(OBJECTNESS_BIAS)
        box.bbox_pred.weight.zero_()
        box.bbox_pred.bias.zero_()
        box.cls_score.weight.zero_()
        box.cls_score.bias.fill_(PERSON_LOGIT)
        box.cls_score.bias[-1] = -PERSON_LOGIT   # detectron2: the last class is background
        charts = model.roi_heads.densepose_predictor
        for layer in (charts.u_lowres, charts.v_lowres):
            layer.weight.mul_(UV_SCALE)
            layer.bias.fill_(0.5)
    return model


def save(model, path: str | Path) -> Path:
    """Save through detectron2's checkpointer into a temp folder, then rename into place."""
    from detectron2.checkpoint import DetectionCheckpointer

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".synthetic-", dir=target.parent)
    try:
        DetectionCheckpointer(model, save_dir=tmp).save("model")
        os.replace(Path(tmp) / "model.pth", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure(cfg, path: str | Path) -> tuple[Path, bool]:
    """The synthetic checkpoint at ``path``, built first if missing; (path, built_now)."""
    target = Path(path)
    if target.is_file():
        return target, False
    return save(build(cfg), target), True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic DensePose checkpoint whose detector fires.")
    parser.add_argument("--config", required=True, help="DensePose config yaml (projects/DensePose/configs/...)")
    parser.add_argument("--out", required=True, help="checkpoint file to write (.pth)")
    args = parser.parse_args(argv)
    from dpdeploy.inenv.config import load

    print(save(build(load(args.config)), args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
