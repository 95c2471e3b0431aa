#!/usr/bin/env python3
"""`invoke predict` vs DensePose's own `apply_net.py show`, side by side in one run.

Same images (the sample photos, copied N times into one folder), same checkpoint (the
synthetic one unless --weights), same config, visualizers, score threshold and detection cap.
Two measurements per tool: a folder in one process (images/s, model loaded once) and one
process per image (latency a user sees per call). Prints the numbers and ratios.

    DPDEPLOY_TEST_D2_SOURCE=/path/to/detectron2 .venv/bin/python benchmarks/predict_bench.py \\
        --prefix <env prefix> [--copies 2] [--weights FILE]

Wall-clock times of whole commands (process start, imports, model load, images, writing).
Our predict writes more per image (input, side-by-side, IUV npz, JSON) than apply_net (one PNG).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dpdeploy.plan import matrix as matrix_mod  # noqa: E402
from dpdeploy.inference import predict, samples  # noqa: E402
from dpdeploy import runner  # noqa: E402
from dpdeploy.inenv.synthetic import cache_name  # noqa: E402

MODEL = "densepose_rcnn_R_50_FPN_s1x"
VIS = "dp_contour,bbox"
CAP = predict.SYNTHETIC_MAX_DETECTIONS


def timed(argv, env=None, cwd=None) -> float:
    start = time.perf_counter()
    done = runner.run(argv, timeout=3600, env=env, cwd=cwd)
    seconds = time.perf_counter() - start
    if done is None or not done.ok:
        tail = (done.stdout + done.stderr)[-3000:] if done else "not found / timed out"
        sys.exit(f"failed: {' '.join(map(str, argv))}\n{tail}")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prefix", required=True, help="DensePose env prefix")
    p.add_argument("--source", default=os.environ.get("DPDEPLOY_TEST_D2_SOURCE", ""), help="detectron2 source")
    p.add_argument("--weights", default="", help="checkpoint (default: the synthetic one, built if missing)")
    p.add_argument("--copies", type=int, default=2, help="copies of each sample photo in the folder run")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if not args.source:
        sys.exit("needs the detectron2 source for apply_net.py: set DPDEPLOY_TEST_D2_SOURCE or pass --source")
    densepose = Path(args.source) / "projects" / "DensePose"
    config = densepose / "configs" / f"{MODEL}.yaml"
    python = str(Path(args.prefix) / "bin" / "python")
    work = Path(tempfile.mkdtemp(prefix="predict-bench-"))
    home = work / "home"
    env = {**predict.worker_env(), "DPDEPLOY_HOME": str(home), "NO_COLOR": "1"}
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

    def ours(inputs: str, out: Path) -> list[str]:
        return [sys.executable, "-m", "invoke", "predict", inputs, "--prefix", args.prefix, "--weights", weights,
                "--config", str(config), "--vis", VIS, "--device", args.device, "--max-detections", str(CAP),
                "--out", str(out)]

    def theirs(inputs: str, out: Path) -> list[str]:
        return [python, "apply_net.py", "show", str(config), weights, inputs, VIS, "--output", str(out / "o.png"),
                "--opts", "MODEL.DEVICE", args.device, "TEST.DETECTIONS_PER_IMAGE", str(CAP)]

    rows = []
    for label, build, cwd in (("invoke predict", ours, ROOT), ("apply_net.py show", theirs, densepose)):
        folder_s = timed(build(str(folder), work / "out" / label / "folder"), env=env, cwd=str(cwd))
        singles = [timed(build(str(photo), work / "out" / label / photo.stem), env=env, cwd=str(cwd))
                   for photo in photos]
        rows.append((label, folder_s, count / folder_s, sum(singles) / len(singles)))
        print(f"{label:18s} folder of {count}: {folder_s:7.1f} s ({count / folder_s:.3f} images/s); "
              f"one image per process: {sum(singles) / len(singles):6.1f} s", flush=True)
    (_, our_folder, our_rate, our_single), (_, their_folder, their_rate, their_single) = rows
    print("\nratios (apply_net / invoke predict, > 1 means predict is faster):")
    print(f"  folder throughput: {our_rate / their_rate:.2f}x   per-image latency: {their_single / our_single:.2f}x")
    print(f"device {args.device}, {count} images ({', '.join(p.name for p in photos)}), weights "
          f"{'synthetic' if not args.weights else args.weights}, cap {CAP} detections, vis {VIS}; work dir {work}")


if __name__ == "__main__":
    main()
