#!/usr/bin/env python3
"""`invoke predict` in each mode vs DensePose's own `apply_net.py show`, side by side in one run.

Same images (the sample photos, copied into one folder), same checkpoint (the synthetic one
unless --weights), same config, visualizers, score threshold and detection cap. Measured: a
folder in one process per mode (images/s, model loaded once), one image per process (the
latency a user sees per call), the peak memory (max RSS of the process tree) and CPU seconds of
each, and each mode's agreement with fp32 batch 1 on the same images (box IoU, share of
pixels with the same body-part label, mean U/V difference where the labels agree), against the
worker running DensePose's model exactly as DefaultPredictor builds it (fp32, batch 1, `--exact`).

    DPDEPLOY_TEST_D2_SOURCE=/path/to/detectron2 .venv/bin/python benchmarks/predict_bench.py \\
        --prefix <env prefix> [--copies 4] [--weights FILE] [--modes fp32:1,fp32:2,bf16:2]

Wall-clock times of whole commands (process start, imports, model load, images, writing).
apply_net runs as users run it; a second row gives it the worker's malloc settings
(predict.MALLOC_TUNABLES) to show how much of the difference they make.
Our predict writes more per image (input, side-by-side, IUV npz, JSON) than apply_net (one PNG).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dpdeploy.plan import matrix as matrix_mod  # noqa: E402
from dpdeploy.inference import predict, samples  # noqa: E402
from dpdeploy.inenv.synthetic import cache_name  # noqa: E402

MODEL = "densepose_rcnn_R_50_FPN_s1x"
VIS = "dp_contour,bbox"
CAP = predict.SYNTHETIC_MAX_DETECTIONS


def timed(argv, env=None, cwd=None) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MiB) of a command and the processes it waited for."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(map(str, argv))}\n{out[-3000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def painted(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes, part labels H x W, UV 2 x H x W) of one output folder, charts pasted at their boxes."""
    result = json.loads((folder / "result.json").read_text())
    width, height = result["size"]
    iuv = np.load(folder / "iuv.npz")
    labels, uv = np.zeros((height, width), np.uint8), np.zeros((2, height, width), np.float32)
    for i in reversed(range(len(result["instances"]))):   # the best-scored instance on top
        x0, y0 = (int(v) for v in iuv["boxes_xyxy"][i][:2])
        chart, chart_uv = iuv[f"labels_{i}"], iuv[f"uv_{i}"]
        h, w = min(chart.shape[0], height - y0), min(chart.shape[1], width - x0)
        mask = chart[:h, :w] > 0
        labels[y0:y0 + h, x0:x0 + w][mask] = chart[:h, :w][mask]
        uv[:, y0:y0 + h, x0:x0 + w][:, mask] = chart_uv[:, :h, :w][:, mask]
    return iuv["boxes_xyxy"], labels, uv


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 1.0


def agreement(reference: Path, other: Path) -> tuple[float, float, float]:
    """(mean best box IoU per reference box, share of foreground pixels with the same label,
    mean |U|+|V| / 2 difference where both label the same part), over all images."""
    ious, same, fg, uv_diff = [], 0, 0, []
    for folder in sorted(p for p in reference.iterdir() if (p / "result.json").is_file()):
        boxes_a, labels_a, uv_a = painted(folder)
        boxes_b, labels_b, uv_b = painted(other / folder.name)
        ious += [max((iou(a, b) for b in boxes_b), default=0.0) for a in boxes_a]
        union = (labels_a > 0) | (labels_b > 0)
        agree = union & (labels_a == labels_b)
        same, fg = same + int(agree.sum()), fg + int(union.sum())
        if agree.any():
            uv_diff.append(float(np.abs(uv_a[:, agree] - uv_b[:, agree]).mean()))
    return (float(np.mean(ious)) if ious else 1.0, same / fg if fg else 1.0,
            float(np.mean(uv_diff)) if uv_diff else 0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prefix", required=True, help="DensePose env prefix")
    p.add_argument("--source", default=os.environ.get("DPDEPLOY_TEST_D2_SOURCE", ""), help="detectron2 source")
    p.add_argument("--weights", default="", help="checkpoint (default: the synthetic one, built if missing)")
    p.add_argument("--copies", type=int, default=4, help="copies of each sample photo in the folder run")
    p.add_argument("--device", default="cpu")
    p.add_argument("--modes", default="fp32:0:1,fp32:0:0,bf16:0:1,bf16:0:0",
                   help="precision:batch:workers per folder run (0: the default batch / one worker per core); "
                        "each is compared with the worker running DensePose's model exactly as DefaultPredictor "
                        "builds it, fp32, batch 1")
    args = p.parse_args()
    if not args.source:
        sys.exit("needs the detectron2 source for apply_net.py: set DPDEPLOY_TEST_D2_SOURCE or pass --source")
    densepose = Path(args.source) / "projects" / "DensePose"
    config = densepose / "configs" / f"{MODEL}.yaml"
    python = str(Path(args.prefix) / "bin" / "python")
    work = Path(tempfile.mkdtemp(prefix="predict-bench-"))
    home = work / "home"
    env = {**predict.worker_env(), "DPDEPLOY_HOME": str(home), "NO_COLOR": "1"}
    upstream = dict(env)   # apply_net as users run it: without the malloc settings our worker gets
    if "GLIBC_TUNABLES" not in os.environ:
        upstream.pop("GLIBC_TUNABLES", None)
    weights = args.weights or str(home / "cache" / "weights" / cache_name(MODEL))
    if not args.weights:
        timed([python, "-m", "dpdeploy.inenv.synthetic", "--config", str(config), "--out", weights], env=env)
    photos = [s.path for s in samples.resolve(matrix_mod.load().samples, args.prefix)]
    folder = work / "images"
    folder.mkdir()
    for n in range(args.copies):
        for photo in photos:
            shutil.copy(photo, folder / f"{n}-{photo.name}")
    count = len(list(folder.iterdir()))

    def ours(inputs: str, out: Path, precision: str = "fp32", batch: int = 0, workers: int = 0) -> list[str]:
        return [sys.executable, "-m", "invoke", "predict", inputs, "--prefix", args.prefix, "--weights", weights,
                "--config", str(config), "--vis", VIS, "--device", args.device, "--max-detections", str(CAP),
                "--out", str(out), "--precision", precision, "--batch-size", str(batch), "--workers", str(workers)]

    def theirs(inputs: str, out: Path) -> list[str]:
        return [python, "apply_net.py", "show", str(config), weights, inputs, VIS, "--output", str(out / "o.png"),
                "--opts", "MODEL.DEVICE", args.device, "TEST.DETECTIONS_PER_IMAGE", str(CAP)]

    def exact(out: Path) -> list[str]:
        """The worker on DensePose's model as DefaultPredictor builds it (no folding, no channels-last,
        no decoder windows), fp32, batch 1: the reference every mode's numbers are compared with."""
        files = sorted(str(f) for f in folder.iterdir())
        req = predict.Request(inputs=files, out=str(out), model=MODEL, python=python, weights=weights,
                              vis=VIS.split(","), device=args.device, config=str(config), max_detections=CAP,
                              batch_size=1)
        cmd = predict.worker_command(req)
        return cmd[:cmd.index("--")] + ["--exact"] + cmd[cmd.index("--"):]

    load = os.getloadavg()
    rows = [("apply_net.py show", *timed(theirs(str(folder), work / "out" / "apply_net"), upstream, str(densepose))),
            ("apply_net.py show, with the worker's malloc settings (GLIBC_TUNABLES)",
             *timed(theirs(str(folder), work / "out" / "apply_net_malloc"), env, str(densepose)))]
    modes = [(m.split(":")[0], int(m.split(":")[1]), int((m.split(":") + ["0"])[2])) for m in args.modes.split(",")]
    outs = {"worker fp32 batch 1 --exact (DefaultPredictor's model)": work / "out" / "exact"}
    rows.append((next(iter(outs)), *timed(exact(outs[next(iter(outs))]), env, str(ROOT))))
    for precision, batch, workers in modes:
        label = f"predict {precision} batch {batch or 'default'}, {workers or 'one per core'} worker(s)"
        outs[label] = work / "out" / label.replace(" ", "-").replace(",", "").replace("(", "").replace(")", "")
        rows.append((label, *timed(ours(str(folder), outs[label], precision, batch, workers), env, str(ROOT))))
    reference = next(iter(outs))
    print(f"\nfolder of {count} images ({', '.join(p.name for p in photos)}), device {args.device}, weights "
          f"{'synthetic' if not args.weights else args.weights}, cap {CAP} detections, vis {VIS}")
    print("| mode | wall s | images/s | x apply_net (wall) | CPU s | x apply_net (CPU) | peak RSS MiB "
          "| box IoU | labels equal | mean U/V diff |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    base_wall, base_cpu = rows[0][1], rows[0][2]
    for label, wall, cpu, rss in rows:
        acc = "| | |" if label not in outs else "| {:.3f} | {:.2%} | {:.4f} |".format(
            *agreement(outs[reference], outs[label]))
        print(f"| {label} | {wall:.1f} | {count / wall:.3f} | {base_wall / wall:.2f}x | {cpu:.1f} | "
              f"{base_cpu / cpu:.2f}x | {rss:.0f} {acc}")
    single = [("apply_net.py show", [timed(theirs(str(ph), work / "single" / "a" / ph.stem), upstream, str(densepose))
                                     for ph in photos]),
              ("invoke predict fp32", [timed(ours(str(ph), work / "single" / "p" / ph.stem), env, str(ROOT))
                                       for ph in photos])]
    print("\none image per process (mean over the sample photos):")
    print("| tool | wall s | x apply_net | CPU s | peak RSS MiB |\n| --- | --- | --- | --- | --- |")
    first = np.mean([t[0] for t in single[0][1]])
    for label, times in single:
        wall = float(np.mean([t[0] for t in times]))
        print(f"| {label} | {wall:.1f} | {first / wall:.2f}x | {np.mean([t[1] for t in times]):.1f} | "
              f"{max(t[2] for t in times):.0f} |")
    after = os.getloadavg()
    print(f"\nload average before {load[0]:.2f} / after {after[0]:.2f} (1 min), {os.cpu_count()} CPUs; "
          f"agreement vs {reference}; work dir {work}")


if __name__ == "__main__":
    main()
