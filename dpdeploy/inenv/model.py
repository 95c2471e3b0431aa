"""DensePose's model for the predict worker: built as DefaultPredictor builds it, run on batches.

The preprocessing is DefaultPredictor's (BGR, ResizeShortestEdge from INPUT.MIN_SIZE_TEST /
MAX_SIZE_TEST), done on loader threads; the forward pass takes a list of images under
``torch.inference_mode`` and, for bf16 / fp16, autocast. The frozen batch norms are folded into
their convolutions and, on a CPU, the weights kept channels-last (oneDNN's fast layout) and
DensePose's decoder run only around the detected boxes (decoder_window.py): the same function up
to float rounding. With ``exact`` the model is DefaultPredictor's as built.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import threading
from pathlib import Path
from typing import Any, Optional, Sequence

from dpdeploy.inenv import config, decoder_window

PRECISIONS = ("fp32", "bf16", "fp16")


class WorkerError(Exception):
    """The run cannot start (no config, no model, a precision the device cannot serve): one line."""


def find_config(model: str, config_file: str, dirs: Sequence[str], densepose_dir: Optional[str]) -> Path:
    """The config yaml: --config if given, else <dir>/<model>.yaml in --config-dir folders, then in
    the configs/ beside the densepose package (a source or editable install has it)."""
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise WorkerError(f"config {config_file} not found")
        return path
    places = [Path(d) for d in dirs]
    if densepose_dir:
        places.append(Path(densepose_dir).parent / "configs")
    for place in places:
        candidate = place / f"{model}.yaml"
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(p) for p in places) or "nowhere"
    raise WorkerError(f"no config {model}.yaml (looked in {looked}): pass --config with the file from "
                      f"detectron2's projects/DensePose/configs")


def checked_weights(weights: Path) -> dict[str, tuple[int, ...]]:
    """The tensor shapes of ``weights`` (name -> shape), read without running code: a .pkl (which
    detectron2's checkpointer unpickles with plain pickle) with the restricted unpickler, anything
    else with ``torch.load(weights_only=True)``."""
    from dpdeploy.inenv import checkpoint   # numpy: imported where weights are read, not by the parent's CLI

    if not weights.is_file():
        raise WorkerError(f"weights {weights} not found")
    try:
        if weights.name.endswith(".pkl"):
            return checkpoint.check_file(weights)
        import torch

        try:
            data = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:   # weights_only refuses what would run code; a damaged file fails too
            raise checkpoint.CheckpointError(f"{weights}: not a torch checkpoint of tensors ({type(exc).__name__})") from None
        if isinstance(data, dict) and isinstance(data.get("model"), dict):
            return {n: tuple(v.shape) for n, v in data["model"].items() if hasattr(v, "shape")}
        raise checkpoint.CheckpointError(f"{weights}: not a detectron2 checkpoint (a dict whose 'model' is a dict)")
    except checkpoint.CheckpointError as exc:
        raise WorkerError(f"weights refused before loading: {exc}") from None


def fitted(net, weights: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse a checkpoint whose tensors do not fit the model built from the config (detectron2's
    checkpointer would skip them with a warning and run a partly random model)."""
    from dpdeploy.inenv import checkpoint

    problems = checkpoint.mismatches({n: tuple(p.shape) for n, p in net.named_parameters()}, shapes)
    if problems:
        raise WorkerError(f"weights refused before loading: {weights} does not fit the model: {problems}")


def check_precision(torch: Any, device: str, precision: str) -> None:
    """Refuse a precision ``device`` cannot serve (no silent fallback to fp32)."""
    if precision == "fp32":
        return
    if not device.startswith("cuda"):
        if precision == "fp16":
            raise WorkerError("--precision fp16 on cpu: torch has no fast fp16 kernels for CPUs; use bf16 or fp32")
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            raise WorkerError("--precision bf16 on cpu: this CPU lacks bf16 instructions (avx512_bf16 / amx); use fp32")
    elif precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise WorkerError(f"--precision bf16 on {device}: this GPU has no bf16 (compute capability < 8.0); use fp16")


def is_oom(exc: BaseException) -> bool:
    """Out of memory on a GPU (torch's OutOfMemoryError) or a CPU (the allocator's RuntimeError)."""
    text = str(exc)
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text or "can't allocate memory" in text


class Model:
    """The R-CNN (as DefaultPredictor builds it) + DensePose's visualizers and extractors."""

    def __init__(self, args: argparse.Namespace):
        import torch
        import densepose
        import detectron2.data.transforms as T
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.modeling import build_model
        from densepose.vis.bounding_box import ScoredBoundingBoxVisualizer
        from densepose.vis.densepose_results import (
            DensePoseResultsContourVisualizer,
            DensePoseResultsFineSegmentationVisualizer,
            DensePoseResultsUVisualizer,
            DensePoseResultsVVisualizer,
        )
        from densepose.vis.extractor import DensePoseResultExtractor, create_extractor

        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise WorkerError(f"--device {args.device}: torch {torch.__version__} sees no CUDA GPU; use --device cpu")
        check_precision(torch, args.device, args.precision)
        self.config = find_config(args.model, args.config, args.config_dir, str(Path(densepose.__file__).parent))
        opts = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(args.min_score), "MODEL.DEVICE", args.device]
        if args.max_detections > 0:
            opts += ["TEST.DETECTIONS_PER_IMAGE", str(args.max_detections)]
        cfg = config.load(self.config, opts)
        self.notes: list[str] = []
        if args.weights == "synthetic":
            from dpdeploy.inenv import synthetic

            weights, built = synthetic.ensure(cfg, args.synthetic_cache)
            self.notes.append(("built" if built else "reused")
                              + f" synthetic checkpoint {weights} (recipe {synthetic.RECIPE})")
            shapes = None
        else:
            weights = Path(args.weights)
            shapes = checked_weights(weights)
        cfg.MODEL.WEIGHTS = str(weights)
        cfg.freeze()
        self.weights = weights
        self.net = build_model(cfg).eval()   # what DefaultPredictor does, with the fit checked before loading
        if shapes is not None:
            fitted(self.net, weights, shapes)
        DetectionCheckpointer(self.net).load(cfg.MODEL.WEIGHTS)
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
        self.bgr = cfg.INPUT.FORMAT == "BGR"
        if not getattr(args, "exact", False):
            fold_frozen_batchnorm(torch, self.net)   # one op instead of two per ResNet conv
            if not args.device.startswith("cuda"):   # oneDNN's convolutions: ~1.3x fewer CPU seconds, same boxes
                self.net = self.net.to(memory_format=torch.channels_last)
                decoder_window.install(self.net.roi_heads)   # DensePose's decoder only around the boxes
        classes = {  # DensePose's apply_net.py ShowAction.VISUALIZERS
            "dp_contour": DensePoseResultsContourVisualizer,
            "dp_segm": DensePoseResultsFineSegmentationVisualizer,
            "dp_u": DensePoseResultsUVisualizer,
            "dp_v": DensePoseResultsVVisualizer,
            "bbox": ScoredBoundingBoxVisualizer,
        }
        self.visualizers = {name: classes[name](cfg=cfg) for name in args.vis}
        self.extractors = {name: create_extractor(vis) for name, vis in self.visualizers.items()}
        self.result_extractor = DensePoseResultExtractor()
        self.torch, self.device = torch, args.device
        self.autocast = (torch.autocast("cuda" if args.device.startswith("cuda") else "cpu",
                                        dtype=torch.bfloat16 if args.precision == "bf16" else torch.float16)
                         if args.precision != "fp32" else None)
        self.draw_lock = threading.Lock()   # matplotlib (the contour visualizer) is not thread-safe

    def prepare(self, rgb) -> dict[str, Any]:
        """DefaultPredictor's preprocessing of one RGB array (runs on a loader thread)."""
        image = rgb[:, :, ::-1] if self.bgr else rgb
        resized = self.aug.get_transform(image).apply_image(image)
        tensor = self.torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))
        return {"image": tensor, "height": rgb.shape[0], "width": rgb.shape[1]}

    def infer(self, inputs: list[dict[str, Any]]) -> list[Any]:
        """One forward pass over a batch; the instances on the CPU in fp32."""
        with self.torch.inference_mode(), (self.autocast or contextlib.nullcontext()):
            batch = [{**i, "image": i["image"].to(self.device, non_blocking=True)} for i in inputs]
            outputs = self.net(batch)
        return [_fp32(self.torch, out["instances"].to("cpu")) for out in outputs]

    def draw(self, name: str, background_bgr, instances, notes: list[str]):
        """One visualizer on a copy of the background (DensePose draws in place); RGB out."""
        data = self.extractors[name](instances)
        if name == "dp_contour":
            data = drop_tiny_charts(data, notes)
        image = self.visualizers[name].visualize(background_bgr.copy(), data)
        return image[:, :, ::-1]


def fold_frozen_batchnorm(torch: Any, net) -> int:
    """Fold each FrozenBatchNorm2d that follows a detectron2 Conv2d into that conv's weight and
    bias (frozen: y = conv(x) * scale + shift = conv'(x) with w' = w * scale, b' = b * scale + shift),
    so inference runs one op instead of two; returns how many were folded."""
    from detectron2.layers import Conv2d, FrozenBatchNorm2d

    folded = 0
    with torch.no_grad():
        for conv in net.modules():
            norm = getattr(conv, "norm", None)
            if not (isinstance(conv, Conv2d) and isinstance(norm, FrozenBatchNorm2d)):
                continue
            scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
            shift = norm.bias - norm.running_mean * scale
            conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
            bias = shift if conv.bias is None else conv.bias * scale + shift
            conv.bias = torch.nn.Parameter(bias, requires_grad=False)
            conv.norm = None
            folded += 1
    return folded


def _fp32(torch: Any, instances):
    """Instances with every float tensor (boxes, scores, DensePose charts) in fp32."""
    def cast(value):
        if isinstance(value, torch.Tensor):
            return value.float() if value.is_floating_point() else value
        if isinstance(getattr(value, "tensor", None), torch.Tensor):   # Boxes
            value.tensor = cast(value.tensor)
        elif dataclasses.is_dataclass(value):                         # DensePoseChartPredictorOutput
            for f in dataclasses.fields(value):
                setattr(value, f.name, cast(getattr(value, f.name)))
        return value

    for name, value in list(instances.get_fields().items()):
        instances.set(name, cast(value))
    return instances


def drop_tiny_charts(data, notes: list[str]):
    """matplotlib's contour needs >= 2x2 values (`Input z must be at least a (2, 2) shaped array`):
    leave instances with a smaller chart out of the contour drawing (they stay in the IUV data)."""
    results, boxes = data
    if not results:
        return data
    keep = [i for i, r in enumerate(results) if min(r.labels.shape[-2:]) >= 2]
    if len(keep) == len(results):
        return data
    notes.append(f"dp_contour: skipped {len(results) - len(keep)} instance(s) whose box is smaller than 2x2 px")
    return [results[i] for i in keep], boxes[keep]
