"""DensePose on a list of images, inside the deployed env; `invoke predict` runs it.

    <prefix>/bin/python -m dpdeploy.inenv.predict_worker --out DIR --model NAME \\
        [--config YAML | --config-dir DIR ...] --weights PATH|synthetic [--synthetic-cache FILE] \\
        [--vis dp_contour,bbox] [--min-score 0.8] [--device cpu] [--max-size 2048] \\
        [--max-detections N] INPUT...

The model is loaded once (DensePose's own config + detectron2's DefaultPredictor, as
DensePose's apply_net.py does); each image is drawn with DensePose's own visualizers and
extractors. Per image it writes the files of the "Predict outputs" contract
(docs/internals.md), each atomically, result.json last, and prints one JSON line to stdout
(`{"event": "image", ...}`); logs go to stderr. Exit status: 0 all images ok, 1 some failed,
3 the model could not be loaded (a `{"event": "fatal"}` line says why).

torch / detectron2 / densepose are imported inside functions, so the argument handling and
config search here stay importable (and tested) without them.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from dpdeploy.fsutil import atomic_write_bytes, atomic_write_json
from dpdeploy.inenv.outputs import DEFAULT_MAX_SIZE, DEFAULT_VIS, VISUALIZERS, unique_stems
from dpdeploy.inenv import checkpoint, config, images

FATAL_EXIT = 3


class WorkerError(Exception):
    """The run cannot start (no config, no model): one line, reported as a fatal event."""


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dpdeploy.inenv.predict_worker", description=__doc__.split("\n")[0])
    p.add_argument("inputs", nargs="+", help="image files (folders are expanded by the caller)")
    p.add_argument("--out", required=True, help="output folder (one subfolder per image)")
    p.add_argument("--model", required=True, help="model name, e.g. densepose_rcnn_R_50_FPN_s1x")
    p.add_argument("--config", default="", help="the model's config yaml (default: searched, see --config-dir)")
    p.add_argument("--config-dir", action="append", default=[],
                   help="folder holding DensePose's configs/ (repeatable; searched before the densepose package's)")
    p.add_argument("--weights", required=True, help="checkpoint file, or 'synthetic'")
    p.add_argument("--synthetic-cache", default="", help="where the synthetic checkpoint is kept (built if missing)")
    p.add_argument("--vis", default=",".join(DEFAULT_VIS), help=f"comma-separated: {', '.join(VISUALIZERS)}")
    p.add_argument("--min-score", type=float, default=0.8, help="detection score threshold (apply_net's default)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--max-size", type=int, default=DEFAULT_MAX_SIZE, help="longest image side fed to the model")
    p.add_argument("--max-detections", type=int, default=0, help="cap on persons per image (0: the config's)")
    p.add_argument("--stems", default="", help="JSON list: each input's output folder (default: from its file name)")
    args = p.parse_args(argv)
    args.stems = json.loads(args.stems) if args.stems else unique_stems([Path(i).name for i in args.inputs])
    if len(args.stems) != len(args.inputs):
        p.error(f"--stems names {len(args.stems)} folders for {len(args.inputs)} inputs")
    args.vis = [v.strip() for v in args.vis.split(",") if v.strip()]
    unknown = [v for v in args.vis if v not in VISUALIZERS]
    if unknown or not args.vis:
        p.error(f"--vis: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(VISUALIZERS)}")
    if args.weights == "synthetic" and not args.synthetic_cache:
        p.error("--weights synthetic needs --synthetic-cache FILE")
    return args


def find_config(model: str, config: str, dirs: Sequence[str], densepose_dir: Optional[str]) -> Path:
    """The config yaml: --config if given, else <dir>/<model>.yaml in --config-dir folders, then in
    the configs/ beside the densepose package (a source or editable install has it)."""
    if config:
        path = Path(config)
        if not path.is_file():
            raise WorkerError(f"config {config} not found")
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


def emit(event: dict[str, Any]) -> None:
    """One progress line for the parent."""
    print(json.dumps(event, sort_keys=True), flush=True)


# --- inside the env: detectron2 / DensePose --------------------------------------------------

def checked_weights(weights: Path) -> Path:
    """``weights`` if it exists and, for a .pkl (which detectron2's checkpointer unpickles with
    plain pickle), loads with the restricted unpickler as a DensePose checkpoint."""
    if not weights.is_file():
        raise WorkerError(f"weights {weights} not found")
    if weights.name.endswith(".pkl"):
        try:
            checkpoint.check_file(weights)
        except checkpoint.CheckpointError as exc:
            raise WorkerError(f"weights refused before loading: {exc}") from None
    return weights


class Model:
    """DefaultPredictor + DensePose's visualizers and extractors, made once per run."""

    def __init__(self, args: argparse.Namespace):
        import torch
        import densepose
        from detectron2.engine.defaults import DefaultPredictor
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
        else:
            weights = checked_weights(Path(args.weights))
        cfg.MODEL.WEIGHTS = str(weights)
        cfg.freeze()
        self.weights = weights
        self.predictor = DefaultPredictor(cfg)
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
        self.torch = torch

    def infer(self, rgb):
        with self.torch.no_grad():
            return self.predictor(rgb[:, :, ::-1].copy())["instances"].to("cpu")   # the predictor takes BGR

    def draw(self, name: str, background_bgr, instances, notes: list[str]):
        """One visualizer on a copy of the background (DensePose draws in place); RGB out."""
        data = self.extractors[name](instances)
        if name == "dp_contour":
            data = _drop_tiny_charts(data, notes)
        image = self.visualizers[name].visualize(background_bgr.copy(), data)
        return image[:, :, ::-1]


def _drop_tiny_charts(data, notes: list[str]):
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


def process(model: Model, path: str, stem: str, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """All outputs of one image; raises images.ImageError for unusable input."""
    import numpy as np

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    loaded = images.load_rgb(path, args.max_size)
    notes = list(loaded.notes)
    t1 = time.perf_counter()
    timings["load_s"] = t1 - t0
    instances = model.infer(loaded.rgb)
    t2 = time.perf_counter()
    timings["infer_s"] = t2 - t1
    gray = loaded.rgb.mean(axis=2, dtype=np.float32).round().astype(np.uint8)
    background = np.repeat(gray[:, :, None], 3, axis=2)   # apply_net's look: charts over grayscale
    overlays = {}
    try:
        for name in args.vis:
            overlays[name] = model.draw(name, background, instances, notes)
    finally:
        _close_figures()
    t3 = time.perf_counter()
    timings["draw_s"] = t3 - t2

    results, _ = model.result_extractor(instances)
    results = results or []
    boxes = instances.pred_boxes.tensor.numpy() if instances.has("pred_boxes") else np.zeros((0, 4), np.float32)
    scores = instances.scores.numpy() if instances.has("scores") else np.zeros((0,), np.float32)
    arrays = {"boxes_xyxy": boxes.astype(np.float32), "scores": scores.astype(np.float32)}
    described = []
    for i, r in enumerate(results):
        labels = r.labels.numpy().astype(np.uint8)
        uv = r.uv.numpy().astype(np.float32)
        arrays[f"labels_{i}"], arrays[f"uv_{i}"] = labels, uv
        described.append({"box_xyxy": [round(float(v), 2) for v in boxes[i]], "score": round(float(scores[i]), 4),
                          "chart_size": list(labels.shape), "parts": sorted(int(v) for v in np.unique(labels) if v)})
    if not described:
        notes.append("no person found")

    folder = out / stem
    atomic_write_bytes(folder / "input.png", images.png_bytes(loaded.rgb))
    for name, overlay in overlays.items():
        atomic_write_bytes(folder / f"{name}.png", images.png_bytes(overlay))
    atomic_write_bytes(folder / "side_by_side.png",
                       images.png_bytes(images.side_by_side(loaded.rgb, overlays[args.vis[0]])))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(folder / "iuv.npz", buf.getvalue())
    timings["write_s"] = time.perf_counter() - t3
    timings["total_s"] = time.perf_counter() - t0
    result = {
        "input": path,
        "stem": stem,
        "format": loaded.format,
        "original_size": list(loaded.original_size),
        "size": list(loaded.size),
        "instances": described,
        "notes": notes,
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "visualizers": list(args.vis),
        "min_score": args.min_score,
    }
    atomic_write_json(folder / "result.json", result)   # last: its presence means the folder is complete
    return result


def _close_figures() -> None:
    """DensePose's contour visualizer opens a matplotlib figure per image and never closes it."""
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    started = time.perf_counter()
    try:
        model = Model(args)
    except Exception as exc:   # anything here means no image can run: one fatal line, exit 3
        emit({"event": "fatal", "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"})
        return FATAL_EXIT
    import torch

    emit({"event": "ready", "config": str(model.config), "weights": str(model.weights),
          "weights_kind": "synthetic" if args.weights == "synthetic" else "real", "device": args.device,
          "torch": torch.__version__, "load_s": round(time.perf_counter() - started, 3),
          "notes": model.notes, "total": len(args.inputs)})
    failed = 0
    for index, (path, stem) in enumerate(zip(args.inputs, args.stems, strict=True), 1):
        event: dict[str, Any] = {"event": "image", "index": index, "total": len(args.inputs), "input": path,
                                 "stem": stem}
        t0 = time.perf_counter()
        try:
            result = process(model, path, stem, out, args)
            event.update(status="ok", instances=len(result["instances"]), notes=result["notes"],
                         timings=result["timings"])
        except images.ImageError as exc:
            event.update(status="error", error=str(exc))
        except Exception as exc:   # never stop the batch: one line for this file, go on
            event.update(status="error", error=f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300])
        if event["status"] == "error":
            failed += 1
            event["timings"] = {"total_s": round(time.perf_counter() - t0, 4)}
        emit(event)
    emit({"event": "done", "ok": len(args.inputs) - failed, "failed": failed,
          "seconds": round(time.perf_counter() - started, 3)})
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
