#!/usr/bin/env python3
"""The Ray engines side by side in one run: `invoke predict --engine ray` vs `invoke predict` on
the same folder, then `invoke serve` with dynamic batching vs one request at a time, each under
the same bounded load test.

    .venv/bin/python benchmarks/ray_bench.py --prefix <env with Ray> [--copies 2] [--workers 2]
        [--requests 16] [--concurrency 8] [--max-batch-size 8]

Same images (copies of the sample photos), synthetic checkpoint, config, visualizers and detection
cap. Batch: wall s, images/s and peak memory (sum of the RSS of the command's whole process tree,
Ray's raylet and workers included, sampled every 0.2 s), and the ratio ray / local. Service: a
load test of --requests POSTs at --concurrency (each with a timeout; the test stops by itself)
prints throughput, p50/p95/p99 latency, errors (non-200 answers) and lost requests (no answer),
then the throughput ratio batched / one at a time. The synthetic checkpoint is a pipeline check,
not a model: the figures time the pipeline, not DensePose's accuracy.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dpdeploy.plan import matrix as matrix_mod  # noqa: E402
from dpdeploy.inference import samples  # noqa: E402

INVOKE = [sys.executable, "-m", "invoke"]


def tree_rss_mib(root: int) -> float:
    """Summed RSS (MiB) of ``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total / 2**20


class Sampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.peak = max(self.peak, tree_rss_mib(self.pid))


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall s, peak tree RSS MiB) of a command; exits on failure (exit 1 = some inputs failed is fine)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = Sampler(proc.pid)
    sampler.start()
    out = proc.communicate()[0]
    sampler.stop.set()
    if proc.returncode not in (0, 1):
        sys.exit(f"failed ({proc.returncode}): {' '.join(argv)}\n{out[-3000:]}")
    return time.perf_counter() - start, sampler.peak


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, data: bytes, timeout: float) -> tuple[int, float]:
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST"), timeout=timeout) as r:
            r.read()
            return r.status, time.perf_counter() - t0
    except urllib.error.HTTPError as err:
        return err.code, time.perf_counter() - t0
    except OSError:
        return 0, time.perf_counter() - t0   # no answer: lost


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def load_test(url: str, data: bytes, requests: int, concurrency: int, timeout: float) -> dict:
    start = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(lambda _: post(url, data, timeout), range(requests)))
    wall = time.perf_counter() - start
    ok = [s for code, s in answers if code == 200]
    return {"wall_s": wall, "throughput": len(ok) / wall, "p50": percentile(ok, 50), "p95": percentile(ok, 95),
            "p99": percentile(ok, 99), "errors": sum(1 for c, _ in answers if c not in (0, 200)),
            "lost": sum(1 for c, _ in answers if c == 0), "ok": len(ok)}


def serve_and_load(args, env: dict[str, str], batch: int, data: bytes) -> dict:
    port = free_port()
    argv = INVOKE + ["serve", "--prefix", args.prefix, "--device", "cpu", "--weights", "synthetic", "--port", str(port),
                     "--max-batch-size", str(batch), "--max-queue", str(args.requests + 1)]
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    sampler = Sampler(proc.pid)
    sampler.start()
    try:
        deadline = time.monotonic() + 300
        while "listening on" not in Path(log.name).read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"invoke serve did not start:\n{Path(log.name).read_text()[-2000:]}")
            time.sleep(1)
        url = f"http://127.0.0.1:{port}/v1/densepose"
        post(url, data, args.timeout)   # warm-up (first forward pass)
        result = load_test(url, data, args.requests, args.concurrency, args.timeout)
        result["peak_rss_mib"] = sampler.peak
        return result
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        sampler.stop.set()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prefix", required=True, help="a DensePose env with Ray (invoke setup --profile cpu-ray)")
    p.add_argument("--copies", type=int, default=2, help="copies of each sample photo in the folder")
    p.add_argument("--workers", type=int, default=2, help="Ray actors for the batch run")
    p.add_argument("--requests", type=int, default=16, help="load test: requests per service run")
    p.add_argument("--concurrency", type=int, default=8, help="load test: requests in flight")
    p.add_argument("--max-batch-size", type=int, default=8, help="the batched service's @serve.batch size")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a request may take before it counts lost")
    p.add_argument("--skip", default="", help="comma-separated: batch, serve")
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    env = {**os.environ, "DPDEPLOY_HOME": os.environ.get("DPDEPLOY_HOME", str(work / "home")), "NO_COLOR": "1"}
    photos = work / "photos"
    photos.mkdir()
    found = samples.resolve(matrix_mod.load().samples, args.prefix)
    for sample in found:
        for k in range(args.copies):
            shutil.copy(sample.path, photos / f"{sample.name}-{k}{sample.path.suffix}")
    n = len(found) * args.copies
    print(f"# ray_bench: {n} images, {os.cpu_count()} CPUs, synthetic checkpoint (a pipeline check, not a model)")
    if "batch" not in skip:
        common = ["predict", str(photos), "--prefix", args.prefix, "--device", "cpu", "--weights", "synthetic"]
        local = timed(INVOKE + common + ["--out", str(work / "local")], env)
        ray = timed(INVOKE + common + ["--out", str(work / "ray"), "--engine", "ray", "--workers", str(args.workers)],
                    env)
        print("\n| engine | wall s | images/s | peak RSS MiB (process tree) |\n| --- | --- | --- | --- |")
        for name, (wall, rss) in (("local (invoke predict)", local), (f"ray ({args.workers} actors)", ray)):
            print(f"| {name} | {wall:.1f} | {n / wall:.3f} | {rss:.0f} |")
        print(f"\nray / local wall time: {ray[0] / local[0]:.2f}x (overhead {100 * (ray[0] / local[0] - 1):+.0f}%), "
              f"memory {ray[1] / local[1]:.2f}x")
    if "serve" not in skip:
        data = found[0].path.read_bytes()
        batched = serve_and_load(args, env, args.max_batch_size, data)
        single = serve_and_load(args, env, 1, data)
        print(f"\nload test: {args.requests} requests at concurrency {args.concurrency}, one replica\n")
        print("| service | ok | errors | lost | wall s | req/s | p50 s | p95 s | p99 s | peak RSS MiB |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, r in ((f"dynamic batching (max {args.max_batch_size})", batched), ("one at a time", single)):
            print(f"| {name} | {r['ok']} | {r['errors']} | {r['lost']} | {r['wall_s']:.1f} | {r['throughput']:.3f} | "
                  f"{r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | {r['peak_rss_mib']:.0f} |")
        print(f"\nthroughput batched / one at a time: {batched['throughput'] / max(single['throughput'], 1e-9):.2f}x")
    print(json.dumps({"work": str(work)}))


if __name__ == "__main__":
    main()
