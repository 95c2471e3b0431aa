"""DensePose on a list of images with Ray Data, inside the deployed env; `invoke predict --engine ray` runs it.

    <prefix>/bin/python -m dpdeploy.inenv.ray_batch [--address auto|HOST:PORT] [--workers N]
        [--gpus-per-worker 0|1] [--object-store-mb 500] <predict_worker's arguments>

Ray Data lists the inputs (one row per image), ``map_batches`` hands batches of rows to a pool of
``DensePoseActor``s (one per GPU with ``num_gpus=1``, else one per CPU slot), and each actor runs
the SAME predictor and per-image writer as the pipelined worker (dpdeploy/inenv/model.py and
predict_worker.Run): decoded, inferred a batch at a time, drawn and written atomically, result.json
last. The driver prints the worker's progress lines (`{"event": "image", ...}`), so the parent
(dpdeploy/inference/predict.py) keeps the same summary and per-file errors as the local engine.

- Without --address a local Ray is started on 127.0.0.1 (``num_cpus`` = --workers, no dashboard,
  a small object store) and stopped at the end; with one the driver joins that cluster, whose
  workers must see the same --out folder (shared storage) and the same env.
- An image whose result.json is already complete is skipped (a re-run resumes).
- An actor that dies mid-batch is restarted by Ray (``max_restarts``) and the batch is retried
  (``max_task_retries``): its images are written again, each file atomically, so nothing is lost
  or half written.

Exit status: 0 all inputs ok, 1 some failed, 3 Ray or the model could not start.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from dpdeploy.inenv.outputs import VIDEO_SUFFIXES

FATAL_EXIT = 3
RESTARTS = 3          # an actor killed mid-run is restarted this often, its batch retried as often
# Test hook: when set to a path, the first actor call that can create that file kills its own
# process (SIGKILL) after writing one image of its batch: the worker-killed-mid-run test.
KILL_ONCE_ENV = "DPDEPLOY_RAY_KILL_ONCE"


def split_args(argv: Optional[Sequence[str]] = None) -> tuple[argparse.Namespace, list[str]]:
    """(this module's own options, the rest: predict_worker's arguments)."""
    p = argparse.ArgumentParser(prog="python -m dpdeploy.inenv.ray_batch", add_help=False, allow_abbrev=False)
    p.add_argument("--address", default="", help="Ray cluster to join (auto, HOST:PORT); default: a local one")
    p.add_argument("--workers", type=int, default=0, help="actors (default: GPUs, else CPUs of the cluster)")
    p.add_argument("--gpus-per-worker", type=int, default=-1, help="1 on GPU devices (default: from --device)")
    p.add_argument("--object-store-mb", type=int, default=500, help="object store of a local Ray")
    return p.parse_known_args(list(sys.argv[1:] if argv is None else argv))


def complete(folder: Path) -> Optional[dict[str, Any]]:
    """The result.json of an output folder a finished run wrote, else None."""
    try:
        result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and isinstance(result.get("instances"), list) else None


def image_event(index: int, total: int, path: str, stem: str, **fields: Any) -> dict[str, Any]:
    return {"event": "image", "index": index, "total": total, "input": path, "stem": stem, **fields}


class DensePoseActor:
    """One model per actor (loaded once), called with batches of rows {index, path, stem}."""

    def __init__(self, worker_argv: list[str]):
        import torch

        from dpdeploy.inenv import predict_worker
        from dpdeploy.inenv.model import Model

        self.args = predict_worker.parse_args(worker_argv)
        torch.set_num_threads(self.args.threads or max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1)))
        self.model = Model(self.args)
        self.run = predict_worker.Run(self.model, self.args)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from dpdeploy.inenv import images, pipeline, predict_worker
        from dpdeploy.inenv.model import is_oom

        rows = [(int(i), str(p), str(s)) for i, p, s in zip(batch["index"], batch["path"], batch["stem"], strict=True)]
        total = len(self.args.inputs)
        events: dict[int, dict[str, Any]] = {}
        loaded = []
        for index, path, stem in rows:
            try:
                loaded.append((index, path, stem, self.run._prepare(images.load_rgb, path)))
            except Exception as exc:
                events[index] = image_event(index, total, path, stem, status="error",
                                            error=predict_worker._error_text(exc), timings={})
        outputs = pipeline.split_infer(self.run.infer, [p for *_, p in loaded], is_oom) if loaded else []
        for n, ((index, path, stem, prepared), out) in enumerate(zip(loaded, outputs, strict=True)):
            try:
                if isinstance(out, BaseException):
                    raise out
                result, _ = self.run.finish(predict_worker.Image(index, path, stem), prepared, out)
                events[index] = image_event(index, total, path, stem, status="ok", instances=len(result["instances"]),
                                            notes=result["notes"], timings=result["timings"])
            except Exception as exc:
                events[index] = image_event(index, total, path, stem, status="error",
                                            error=predict_worker._error_text(exc), timings={})
            finally:
                predict_worker._close_figures()
            if n == 0:
                _maybe_die()
        return {"index": [i for i, _, _ in rows], "event": [json.dumps(events[i], sort_keys=True) for i, _, _ in rows]}


def _maybe_die() -> None:
    marker = os.environ.get(KILL_ONCE_ENV)
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def start_ray(own: argparse.Namespace, workers: int, gpus: bool) -> bool:
    """Join --address, or start a local Ray on loopback; True when this process started it."""
    import ray

    if own.address:
        ray.init(address=own.address, log_to_driver=False, include_dashboard=False)
        return False
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(num_cpus=max(1, workers), num_gpus=None if gpus else 0,   # None: Ray counts the GPUs
             object_store_memory=own.object_store_mb * 2**20, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    return True


def main(argv: Optional[Sequence[str]] = None) -> int:
    from dpdeploy.inenv import predict_worker
    from dpdeploy.inenv.predict_worker import emit

    own, rest = split_args(argv)
    args = predict_worker.parse_args(rest)
    started = time.perf_counter()
    total = len(args.inputs)
    gpu = args.device.startswith("cuda")
    per_gpu = own.gpus_per_worker if own.gpus_per_worker >= 0 else (1 if gpu else 0)
    out = Path(args.out)
    rows, failed, skipped = [], 0, 0
    for index, (path, stem) in enumerate(zip(args.inputs, args.stems, strict=True), 1):
        done = complete(out / stem)
        if Path(path).suffix.lower() in VIDEO_SUFFIXES:
            failed += 1
            emit(image_event(index, total, path, stem, status="error", timings={},
                             error="videos run with the local engine: invoke predict CLIP (without --engine ray)"))
        elif done is not None:
            skipped += 1
            emit(image_event(index, total, path, stem, status="ok", instances=len(done["instances"]),
                             notes=list(done.get("notes", [])) + ["skipped: result.json is complete from an earlier run"],
                             timings={}))
        else:
            rows.append({"index": index, "path": path, "stem": stem})
    ours = False
    try:
        import ray

        workers = own.workers or (predict_worker.cpus() if not gpu else 1)
        ours = start_ray(own, workers, bool(per_gpu))
        if own.address and not own.workers:
            res = ray.cluster_resources()
            workers = max(1, int(res.get("GPU", 0)) if per_gpu else int(res.get("CPU", 1)))
        workers = max(1, min(workers, len(rows) or 1))
        batch = args.batch_size or (2 if not gpu else 4)
        emit({"event": "ready", "config": "", "weights": args.weights,
              "weights_kind": "synthetic" if args.weights == "synthetic" else "real", "device": args.device,
              "torch": "", "load_s": round(time.perf_counter() - started, 3), "total": total, "batch_size": batch,
              "precision": args.precision, "threads": args.threads,
              "notes": [f"engine ray: {workers} actor(s), {'1 GPU' if per_gpu else '1 CPU'} each, "
                        f"{'cluster ' + own.address if own.address else 'local Ray on 127.0.0.1'}"
                        + (f"; {skipped} image(s) already complete, skipped" if skipped else "")]})
        if rows:
            worker_argv = list(rest)
            if args.threads == 0 and not gpu:
                worker_argv = ["--threads", "1", *worker_argv] if workers > 1 else worker_argv
            ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), workers * 4)))
            results = ds.map_batches(
                DensePoseActor, fn_constructor_kwargs={"worker_argv": worker_argv}, batch_size=batch,
                compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1,
                num_gpus=per_gpu or None, max_restarts=RESTARTS, max_task_retries=RESTARTS,
                runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", ""), "MPLBACKEND": "Agg",
                                          **({KILL_ONCE_ENV: os.environ[KILL_ONCE_ENV]}
                                             if KILL_ONCE_ENV in os.environ else {})}})
            for row in results.iter_rows():
                event = json.loads(row["event"])
                failed += event["status"] == "error"
                emit(event)
    except Exception as exc:   # Ray or the actors could not start: the parent reports unprocessed inputs
        emit({"event": "fatal", "error": f"engine ray: {type(exc).__name__}: {' '.join(str(exc).split())}"[:400]})
        return FATAL_EXIT
    finally:
        if ours:
            import ray

            ray.shutdown()
    emit({"event": "done", "ok": total - failed, "failed": failed, "seconds": round(time.perf_counter() - started, 3)})
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
