"""DensePose on a list of images and videos, inside the deployed env; `invoke predict` runs it.

    <prefix>/bin/python -m dpdeploy.inenv.predict_worker --out DIR --model NAME \\
        [--config YAML | --config-dir DIR ...] --weights PATH|synthetic [--synthetic-cache FILE] \\
        [--vis dp_contour,bbox] [--min-score 0.8] [--device cpu] [--max-size 2048] \\
        [--max-detections N] [--batch-size N] [--precision fp32|bf16|fp16] [--threads N] \\
        [--every N] INPUT...

The model is loaded once (DensePose's own config, the R-CNN as detectron2's DefaultPredictor
builds it); images are decoded ahead of it on a loader thread, run through it a batch at a
time (dpdeploy/inenv/pipeline.py), drawn with DensePose's own visualizers and written behind
it. Per image it writes the files of the "Predict outputs" contract (docs/internals.md), each
atomically, result.json last, and prints one JSON line to stdout (`{"event": "image", ...}`);
a video gets per-frame IUV data and an overlay video. Logs go to stderr. Exit status: 0 all
inputs ok, 1 some failed, 3 the model could not be loaded (a `{"event": "fatal"}` line says why).

torch / detectron2 / densepose are imported inside functions, so the argument handling here
stays importable (and tested) without them.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from dpdeploy.fsutil import atomic_write_bytes, atomic_write_json
from dpdeploy.inenv import images, pipeline, video
from dpdeploy.inenv.model import PRECISIONS, Model, is_oom
from dpdeploy.inenv.outputs import (DEFAULT_MAX_SIZE, DEFAULT_VIS, VIDEO_OVERLAY, VIDEO_SUFFIXES, VISUALIZERS,
                                    unique_stems)

FATAL_EXIT = 3


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dpdeploy.inenv.predict_worker", description=__doc__.split("\n")[0])
    p.add_argument("inputs", nargs="+", help="image and video files (folders are expanded by the caller)")
    p.add_argument("--out", required=True, help="output folder (one subfolder per input)")
    p.add_argument("--model", required=True, help="model name, e.g. densepose_rcnn_R_50_FPN_s1x")
    p.add_argument("--config", default="", help="the model's config yaml (default: searched, see --config-dir)")
    p.add_argument("--config-dir", action="append", default=[],
                   help="folder holding DensePose's configs/ (repeatable; searched before the densepose package's)")
    p.add_argument("--weights", required=True, help="checkpoint file, or 'synthetic'")
    p.add_argument("--synthetic-cache", default="", help="where the synthetic checkpoint is kept (built if missing)")
    p.add_argument("--vis", default=",".join(DEFAULT_VIS), help=f"comma-separated: {', '.join(VISUALIZERS)}")
    p.add_argument("--min-score", type=float, default=0.8, help="detection score threshold (apply_net's default)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--max-size", type=int, default=DEFAULT_MAX_SIZE, help="longest image side fed to the model")
    p.add_argument("--max-detections", type=int, default=0, help="cap on persons per image (0: the config's)")
    p.add_argument("--batch-size", type=int, default=0, help="images per forward pass (0: from the device)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="fp32, or bf16 / fp16 autocast")
    p.add_argument("--threads", type=int, default=0, help="torch's CPU threads (0: every CPU this process may use)")
    p.add_argument("--exact", action="store_true", help="the model as DefaultPredictor builds it: no batch-norm "
                   "folding, no channels-last, no decoder windows (the benchmark's reference)")
    p.add_argument("--every", type=int, default=1, help="videos: keep every Nth frame")
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
    if args.every < 1 or args.batch_size < 0:
        p.error("--every must be >= 1 and --batch-size >= 0")
    return args


def emit(event: dict[str, Any]) -> None:
    """One progress line for the parent."""
    print(json.dumps(event, sort_keys=True), flush=True)


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass
class Image:
    index: int
    path: str
    stem: str


@dataclass
class Video:
    index: int
    path: str
    stem: str
    info: video.Decoded = field(default_factory=video.Decoded)
    frames: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    writer: Optional[video.OverlayWriter] = None


@dataclass
class Frame:
    video: Video
    number: int


@dataclass
class Prepared:
    loaded: images.Loaded
    input: dict[str, Any]
    load_s: float
    infer_s: float = 0.0


class Run:
    """The jobs of one run and what becomes of each: outputs on disk, one event per input."""

    def __init__(self, model: Model, args: argparse.Namespace):
        self.model, self.args, self.out = model, args, Path(args.out)
        self.failed = 0

    # --- loading (loader threads) and the model (the main thread) --------------------------
    def jobs(self) -> Iterator[pipeline.Job]:
        for index, (path, stem) in enumerate(zip(self.args.inputs, self.args.stems, strict=True), 1):
            if Path(path).suffix.lower() in VIDEO_SUFFIXES:
                yield from self._video_jobs(Video(index, path, stem))
            else:
                yield pipeline.Job(Image(index, path, stem), lambda p=path: self._prepare(images.load_rgb, p))

    def _video_jobs(self, clip: Video) -> Iterator[pipeline.Job]:
        for number, rgb in video.frames(clip.path, self.args.every, clip.info):   # decoded in order, here
            yield pipeline.Job(Frame(clip, number), lambda a=rgb: self._prepare(images.from_array, a))
        yield pipeline.Job(clip, lambda: None, infer=False)

    def _prepare(self, load, *what) -> Prepared:
        t0 = time.perf_counter()
        loaded = load(*what, self.args.max_size)
        return Prepared(loaded, self.model.prepare(loaded.rgb), time.perf_counter() - t0)

    def infer(self, batch: list[Prepared]) -> list[Any]:
        t0 = time.perf_counter()
        outputs = self.model.infer([p.input for p in batch])
        for p in batch:
            p.infer_s = (time.perf_counter() - t0) / len(batch)
        return outputs

    # --- finishing (writer threads) ---------------------------------------------------------
    def finish(self, key: Image | Frame, prepared: Prepared, instances) -> Any:
        import numpy as np

        t0 = time.perf_counter()
        rgb, notes = prepared.loaded.rgb, list(prepared.loaded.notes)
        gray = rgb.mean(axis=2, dtype=np.float32).round().astype(np.uint8)
        background = np.repeat(gray[:, :, None], 3, axis=2)   # apply_net's look: charts over grayscale
        names = self.args.vis if isinstance(key, Image) else self.args.vis[:1]
        with self.model.draw_lock:
            try:
                overlays = {name: self.model.draw(name, background, instances, notes) for name in names}
            finally:
                _close_figures()
        t1 = time.perf_counter()
        arrays, described = self._arrays(instances)
        if not described:
            notes.append("no person found")
        folder = self.out / (key.stem if isinstance(key, Image) else f"{key.video.stem}/frame_{key.number:06d}")
        if isinstance(key, Image):
            atomic_write_bytes(folder / "input.png", images.png_bytes(rgb))
            for name, overlay in overlays.items():
                atomic_write_bytes(folder / f"{name}.png", images.png_bytes(overlay))
            atomic_write_bytes(folder / "side_by_side.png",
                               images.png_bytes(images.side_by_side(rgb, overlays[self.args.vis[0]])))
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(folder / "iuv.npz", buf.getvalue())
        timings = {"load_s": prepared.load_s, "infer_s": prepared.infer_s, "draw_s": t1 - t0,
                   "write_s": time.perf_counter() - t1}
        timings["total_s"] = sum(timings.values())
        result = {
            "input": key.path if isinstance(key, Image) else key.video.path,
            "stem": str(folder.relative_to(self.out)),
            "format": prepared.loaded.format,
            "original_size": list(prepared.loaded.original_size),
            "size": list(prepared.loaded.size),
            "instances": described,
            "notes": notes,
            "timings": {k: round(v, 4) for k, v in timings.items()},
            "visualizers": list(names),
            "min_score": self.args.min_score,
        }
        if isinstance(key, Frame):
            result["frame"] = key.number
            result["time_s"] = round(float(key.number / key.video.info.fps), 4) if key.video.info.fps else None
        atomic_write_json(folder / "result.json", result)   # last: its presence means the folder is complete
        return result, overlays[names[0]]

    def _arrays(self, instances) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        import numpy as np

        results, _ = self.model.result_extractor(instances)
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
                              "chart_size": list(labels.shape),
                              "parts": sorted(int(v) for v in np.unique(labels) if v)})
        return arrays, described

    # --- done (the main thread, in input order) --------------------------------------------
    def done(self, job: pipeline.Job, value: Any, error: Optional[BaseException]) -> None:
        key = job.key
        if isinstance(key, Frame):
            clip = key.video
            if error is not None:
                clip.errors.append(f"frame {key.number}: {_error_text(error)}")
                return
            result, overlay = value
            if clip.writer is None:
                clip.writer = video.OverlayWriter(self.out / clip.stem / VIDEO_OVERLAY,
                                                  clip.info.fps / self.args.every)
            clip.writer.add(overlay)
            clip.frames.append({"frame": result["frame"], "time_s": result["time_s"],
                                "instances": len(result["instances"]), "stem": result["stem"]})
            return
        if isinstance(key, Video):
            self._video_done(key)
            return
        event: dict[str, Any] = {"event": "image", "index": key.index, "total": len(self.args.inputs),
                                 "input": key.path, "stem": key.stem}
        if error is None:
            result, _ = value
            event.update(status="ok", instances=len(result["instances"]), notes=result["notes"],
                         timings=result["timings"])
        else:
            event.update(status="error", error=_error_text(error), timings={})
        self._emit(event)

    def _video_done(self, clip: Video) -> None:
        wrote = clip.writer.close() if clip.writer else False
        problems = [clip.info.error] if clip.info.error else []
        problems += clip.errors[:3] + ([f"... {len(clip.errors) - 3} more frame errors"] if len(clip.errors) > 3 else [])
        notes = [f"video: {len(clip.frames)} frame(s) of {clip.info.read} decoded (every {self.args.every}), "
                 f"overlay {VIDEO_OVERLAY if wrote else 'not written'} at {float(clip.info.fps / self.args.every):.3g} fps"]
        seconds = round(time.perf_counter() - clip.started, 4)
        summary = {"input": clip.path, "stem": clip.stem, "format": "video", "fps": float(clip.info.fps),
                   "every": self.args.every, "frames_decoded": clip.info.read, "frames": clip.frames,
                   "overlay": VIDEO_OVERLAY if wrote else None, "notes": notes, "errors": problems,
                   "visualizers": self.args.vis[:1], "min_score": self.args.min_score}
        if clip.frames or problems:
            atomic_write_json(self.out / clip.stem / "result.json", summary)
        event: dict[str, Any] = {"event": "image", "index": clip.index, "total": len(self.args.inputs),
                                 "input": clip.path, "stem": clip.stem, "frames": len(clip.frames),
                                 "instances": sum(f["instances"] for f in clip.frames), "notes": notes,
                                 "timings": {"total_s": seconds}}
        if problems:
            event.update(status="error", error="; ".join(problems))
        else:
            event.update(status="ok")
        self._emit(event)

    def _emit(self, event: dict[str, Any]) -> None:
        if event["status"] == "error":
            self.failed += 1
        emit(event)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, images.ImageError):
        return str(exc)
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]


def _close_figures() -> None:
    """DensePose's contour visualizer opens a matplotlib figure per image and never closes it."""
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    threads = args.threads or cpus()
    try:
        import torch

        torch.set_num_threads(threads)
        model = Model(args)
    except Exception as exc:   # anything here means no image can run: one fatal line, exit 3
        emit({"event": "fatal", "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"})
        return FATAL_EXIT
    free = None
    if args.device.startswith("cuda"):
        free = torch.cuda.mem_get_info(torch.device(args.device))[0] // 2**20
    batch = args.batch_size or pipeline.default_batch_size(args.device, free, threads)
    emit({"event": "ready", "config": str(model.config), "weights": str(model.weights),
          "weights_kind": "synthetic" if args.weights == "synthetic" else "real", "device": args.device,
          "torch": torch.__version__, "load_s": round(time.perf_counter() - started, 3),
          "notes": model.notes, "total": len(args.inputs), "batch_size": batch, "precision": args.precision,
          "threads": threads})
    run = Run(model, args)
    helpers = 1 if not args.device.startswith("cuda") else max(1, min(4, cpus() // 2))   # CPU: the model needs the cores
    pipeline.run(run.jobs(), infer=run.infer, finish=run.finish, done=run.done, batch_size=batch,
                 prefetch=2 * batch, loaders=helpers, writers=helpers, is_oom=is_oom,
                 group=lambda prepared: tuple(prepared.input["image"].shape))   # same-size batches: no extra padding
    emit({"event": "done", "ok": len(args.inputs) - run.failed, "failed": run.failed,
          "seconds": round(time.perf_counter() - started, 3)})
    return 1 if run.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
