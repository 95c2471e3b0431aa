"""DensePose on a list of images with Ray Data, inside the deployed env; `invoke predict --engine ray` runs it.

    <prefix>/bin/python -m dpdeploy.inenv.ray_batch [--address auto|HOST:PORT] [--workers N]
        [--gpus-per-worker 0|1] [--object-store-mb 500] <predict_worker's arguments>

Ray Data lists the inputs (one row per image or video), a first ``map_batches`` stage (``expand``,
Ray tasks) decodes each video into its kept frames (every --every-th, with the local engine's
decoder, dpdeploy/inenv/video.py) followed by one end row saying how many frames decoded and what
stopped the rest; a second ``map_batches`` hands batches of rows to a pool of ``DensePoseActor``s
(one per GPU with ``num_gpus=1``, else one per CPU slot), and each actor runs the SAME predictor
and per-image / per-frame writer as the pipelined worker (dpdeploy/inenv/model.py and
predict_worker.Run): inferred a batch at a time, drawn and written atomically, result.json last.
The driver prints the worker's progress lines (`{"event": "image", ...}`), so the parent
(dpdeploy/inference/predict.py) keeps the same summary and per-file errors as the local engine.
A video's frames come back in any order: the driver puts them back in frame order (``InOrder``)
and hands them to the local engine's own video bookkeeping (predict_worker.Run.done), which
writes the overlay video at the source's fps / --every and the video's result.json, as locally.

- Without --address a local Ray is started on 127.0.0.1 (``num_cpus`` = --workers, no dashboard,
  a small object store) and stopped at the end; with one the driver joins that cluster, whose
  workers must see the same --out folder (shared storage) and the same env.
- An image whose result.json is already complete is skipped (a re-run resumes), and so is a video
  whose result.json lists its frames and overlay without an error (else the video runs again).
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
from typing import Any, Iterator, Optional, Sequence

from dpdeploy.inenv.outputs import VIDEO_OVERLAY, VIDEO_SUFFIXES

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
    result = _json(folder / "result.json")
    return result if result and isinstance(result.get("instances"), list) else None


def video_complete(folder: Path) -> Optional[dict[str, Any]]:
    """The result.json of a video a finished run wrote in full (its frames, the overlay, no error), else None."""
    result = _json(folder / "result.json")
    if not (result and result.get("format") == "video" and isinstance(result.get("frames"), list)
            and result["frames"] and not result.get("errors") and result.get("overlay") == VIDEO_OVERLAY):
        return None
    return result if (folder / VIDEO_OVERLAY).is_file() else None


def _json(path: Path) -> Optional[dict[str, Any]]:
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def image_event(index: int, total: int, path: str, stem: str, **fields: Any) -> dict[str, Any]:
    return {"event": "image", "index": index, "total": total, "input": path, "stem": stem, **fields}


# --- rows through the dataset -------------------------------------------------------------------
# Every row has these columns, whatever its kind: "image" (a file the actor loads), "video" (a
# file ``expand`` turns into "frame" rows, then one "end" row), "frame" (a decoded frame: data =
# its RGB bytes, meta = {fps, shape}), "end" (meta = {fps, frames, read, error} of the decoder).
ROW_COLUMNS = ("index", "path", "stem", "kind", "frame", "meta", "data")
# What an actor returns per row: event = an image's progress line, a frame's {"result", "shape", "fps"}
# or {"error"}, an end row's meta; overlay = a frame's overlay RGB bytes.
OUT_COLUMNS = ("index", "kind", "frame", "event", "overlay")


def row(index: int, path: str, stem: str, kind: str, frame: int = -1, meta: Optional[dict[str, Any]] = None,
        data: bytes = b"") -> dict[str, Any]:
    return {"index": index, "path": path, "stem": stem, "kind": kind, "frame": frame,
            "meta": json.dumps(meta or {}, sort_keys=True), "data": data}


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] = ROW_COLUMNS):
    """``rows`` as one Arrow block with fixed types (bytes stay bytes: numpy's fixed-width bytes
    would drop trailing zero bytes, i.e. black pixels)."""
    import pyarrow as pa

    types = {"index": pa.int64(), "frame": pa.int64(), "data": pa.binary(), "overlay": pa.binary()}
    return pa.table({c: pa.array([r[c] for r in rows], types.get(c, pa.string())) for c in columns})


def frame_row(index: int, path: str, stem: str, number: int, rgb, fps) -> dict[str, Any]:
    import numpy as np

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    return row(index, path, stem, "frame", number, {"fps": str(fps), "shape": list(rgb.shape)}, rgb.tobytes())


def array(data: bytes, shape: Sequence[int]):
    """The RGB array a frame row (or an actor's overlay) carries as bytes (a writable copy, as a decoded frame is)."""
    import numpy as np

    return np.frombuffer(data, dtype=np.uint8).reshape(tuple(shape)).copy()


def expand(batch: dict[str, Any], every: int, chunk: int) -> Iterator[Any]:
    """Ray Data stage (a generator, so a long video streams): image rows pass through; a video row
    becomes its kept frames, ``chunk`` rows per block, then its end row, decoded in order by the
    local engine's decoder (a truncated video: the frames that decoded, the end row says why not more)."""
    from dpdeploy.inenv import video

    for index, path, stem, kind in zip(batch["index"], batch["path"], batch["stem"], batch["kind"], strict=True):
        index, path, stem = int(index), str(path), str(stem)
        if kind != "video":
            yield table([row(index, path, stem, str(kind))])
            continue
        info, pending = video.Decoded(), []
        for number, rgb in video.frames(path, every, info):
            pending.append(frame_row(index, path, stem, number, rgb, info.fps))
            if len(pending) >= chunk:
                yield table(pending)
                pending = []
        end = {"fps": str(info.fps), "frames": info.frames, "read": info.read, "error": info.error}
        yield table([*pending, row(index, path, stem, "end", info.read, end)])


class InOrder:
    """A video's frames as the actors finish them (any order; a retried batch may repeat one), handed
    on in frame order: 0, every, 2 * every, ... below the count of frames the decoder read, which the
    end row tells (``close``). Standard library only."""

    def __init__(self, every: int):
        self.every, self.next, self.read = every, 0, None
        self.early: dict[int, Any] = {}

    def add(self, number: int, item: Any) -> list[tuple[int, Any]]:
        """Take frame ``number``; return the frames now due, in order (a repeat or a stray: none)."""
        if number < self.next or number in self.early or number % self.every or \
                (self.read is not None and number >= self.read):
            return []
        self.early[number] = item
        due = []
        while self.next in self.early:
            due.append((self.next, self.early.pop(self.next)))
            self.next += self.every
        return due

    def close(self, read: int) -> None:
        self.read = read

    @property
    def complete(self) -> bool:
        return self.read is not None and self.next >= self.read

    def missing(self) -> list[int]:
        """The kept frames that never came back (for a run that ended without them)."""
        end = self.read if self.read is not None else max([self.next - 1, *self.early]) + 1
        return [n for n in range(self.next, end, self.every) if n not in self.early]

    def rest(self) -> list[tuple[int, Any]]:
        """The frames held back behind a missing one, in order (for a run that ended without it)."""
        due = sorted(self.early.items())
        self.early.clear()
        return due


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

    def __call__(self, batch: dict[str, Any]):
        from dpdeploy.inenv import images, pipeline, predict_worker, video
        from dpdeploy.inenv.model import is_oom

        rows = [dict(zip(ROW_COLUMNS, values, strict=True)) for values in zip(*(batch[c] for c in ROW_COLUMNS), strict=True)]
        total = len(self.args.inputs)
        out: dict[int, tuple[dict[str, Any], bytes]] = {}   # position in the batch -> (event, overlay bytes)
        loaded = []
        for pos, r in enumerate(rows):
            index, path, stem, kind, meta = int(r["index"]), str(r["path"]), str(r["stem"]), str(r["kind"]), \
                json.loads(r["meta"] or "{}")
            if kind == "end":
                out[pos] = (meta, b"")
                continue
            try:
                if kind == "frame":
                    from fractions import Fraction

                    clip = predict_worker.Video(index, path, stem, info=video.Decoded(fps=Fraction(meta["fps"])))
                    key: Any = predict_worker.Frame(clip, int(r["frame"]))
                    prepared = self.run._prepare(images.from_array, array(bytes(r["data"]), meta["shape"]))
                else:
                    key = predict_worker.Image(index, path, stem)
                    prepared = self.run._prepare(images.load_rgb, path)
                loaded.append((pos, key, prepared))
            except Exception as exc:
                out[pos] = (self._failed(kind, index, total, path, stem, exc), b"")
        outputs = pipeline.split_infer(self.run.infer, [p for *_, p in loaded], is_oom) if loaded else []
        for n, ((pos, key, prepared), output) in enumerate(zip(loaded, outputs, strict=True)):
            r = rows[pos]
            try:
                if isinstance(output, BaseException):
                    raise output
                result, overlay = self.run.finish(key, prepared, output)
                if isinstance(key, predict_worker.Frame):
                    import numpy as np

                    overlay = np.ascontiguousarray(overlay, dtype=np.uint8)
                    out[pos] = ({"result": result, "shape": list(overlay.shape), "fps": str(key.video.info.fps)},
                                overlay.tobytes())
                else:
                    out[pos] = (image_event(key.index, total, key.path, key.stem, status="ok",
                                            instances=len(result["instances"]), notes=result["notes"],
                                            timings=result["timings"]), b"")
            except Exception as exc:
                out[pos] = (self._failed(str(r["kind"]), int(r["index"]), total, str(r["path"]), str(r["stem"]), exc),
                            b"")
            finally:
                predict_worker._close_figures()
            if n == 0:
                _maybe_die()
        return table([{"index": int(r["index"]), "kind": str(r["kind"]), "frame": int(r["frame"]),
                       "event": json.dumps(out[pos][0], sort_keys=True), "overlay": out[pos][1]}
                      for pos, r in enumerate(rows)], OUT_COLUMNS)

    @staticmethod
    def _failed(kind: str, index: int, total: int, path: str, stem: str, exc: BaseException) -> dict[str, Any]:
        from dpdeploy.inenv import predict_worker

        if kind == "frame":
            return {"error": predict_worker._error_text(exc)}
        return image_event(index, total, path, stem, status="error", error=predict_worker._error_text(exc), timings={})


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


class Videos:
    """The driver's side of the videos: each one's frames put back in order and handed, with its end
    row, to the local engine's own bookkeeping (predict_worker.Run.done: the overlay video at the
    source's fps / --every, the video's result.json, its progress line)."""

    def __init__(self, args: argparse.Namespace):
        from dpdeploy.inenv import predict_worker

        self.run = predict_worker.Run(None, args)   # no model here: only done() and what it writes
        self.every = args.every
        self.clips: dict[int, tuple[Any, InOrder]] = {}

    def add(self, index: int, path: str, stem: str) -> None:
        from dpdeploy.inenv import predict_worker

        self.clips[index] = (predict_worker.Video(index, path, stem), InOrder(self.every))

    def take(self, kind: str, index: int, number: int, record: dict[str, Any], overlay: bytes) -> None:
        """One actor output of a video: a frame (or its error), or the video's end row."""
        from fractions import Fraction

        from dpdeploy.inenv import images

        clip, order = self.clips[index]
        if kind == "end":
            clip.info.fps, clip.info.frames = Fraction(record["fps"]), int(record["frames"])
            clip.info.read, clip.info.error = int(record["read"]), str(record["error"])
            order.close(clip.info.read)
        elif "result" in record:
            if not clip.info.fps:   # the overlay's rate, needed before the end row comes
                clip.info.fps = Fraction(record["fps"])
            self._frames(clip, order.add(number, ((record["result"], array(overlay, record["shape"])), None)))
        else:   # the local engine's text for a frame error, verbatim (an ImageError is reported as is)
            self._frames(clip, order.add(number, (None, images.ImageError(record["error"]))))
        self._maybe_done(index)

    def _frames(self, clip: Any, due: list[tuple[int, Any]]) -> None:
        from dpdeploy.inenv import pipeline, predict_worker

        for number, (value, error) in due:
            self.run.done(pipeline.Job(predict_worker.Frame(clip, number), None), value, error)

    def _maybe_done(self, index: int, force: bool = False) -> None:
        from dpdeploy.inenv import pipeline

        clip, order = self.clips[index]
        if order.complete or force:
            del self.clips[index]
            self.run.done(pipeline.Job(clip, None, infer=False), None, None)

    def finish(self) -> None:
        """Videos the run ended without (frames that never came back): what came, then an error."""
        for index in list(self.clips):
            clip, order = self.clips[index]
            missing = order.missing()
            self._frames(clip, order.rest())
            clip.errors.insert(0, f"engine ray: {len(missing)} frame(s) never came back"
                                  + (f" (frame {missing[0]} first)" if missing else "; the decoder's end row is missing"))
            self._maybe_done(index, force=True)

    @property
    def failed(self) -> int:
        return self.run.failed


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
    videos = Videos(args)
    rows, failed, skipped = [], 0, 0
    for index, (path, stem) in enumerate(zip(args.inputs, args.stems, strict=True), 1):
        is_video = Path(path).suffix.lower() in VIDEO_SUFFIXES
        done = video_complete(out / stem) if is_video else complete(out / stem)
        if done is not None:
            skipped += 1
            counts = {"frames": len(done["frames"]), "instances": sum(f.get("instances", 0) for f in done["frames"])} \
                if is_video else {"instances": len(done["instances"])}
            emit(image_event(index, total, path, stem, status="ok", **counts,
                             notes=list(done.get("notes", [])) + ["skipped: result.json is complete from an earlier run"],
                             timings={}))
        else:
            rows.append(row(index, path, stem, "video" if is_video else "image"))
            if is_video:
                videos.add(index, path, stem)
    ours = False
    try:
        import ray

        workers = own.workers or (predict_worker.cpus() if not gpu else 1)
        ours = start_ray(own, workers, bool(per_gpu))
        if own.address and not own.workers:
            res = ray.cluster_resources()
            workers = max(1, int(res.get("GPU", 0)) if per_gpu else int(res.get("CPU", 1)))
        if not videos.clips:   # a video has frames for every actor
            workers = max(1, min(workers, len(rows) or 1))
        batch = args.batch_size or (2 if not gpu else 4)
        emit({"event": "ready", "config": "", "weights": args.weights,
              "weights_kind": "synthetic" if args.weights == "synthetic" else "real", "device": args.device,
              "torch": "", "load_s": round(time.perf_counter() - started, 3), "total": total, "batch_size": batch,
              "precision": args.precision, "threads": args.threads,
              "notes": [f"engine ray: {workers} actor(s), {'1 GPU' if per_gpu else '1 CPU'} each, "
                        f"{'cluster ' + own.address if own.address else 'local Ray on 127.0.0.1'}"
                        + (f"; {skipped} input(s) already complete, skipped" if skipped else "")
                        + (f"; {len(videos.clips)} video(s) decoded by Ray tasks" if videos.clips else "")]})
        if rows:
            worker_argv = list(rest)
            if args.threads == 0 and not gpu:
                worker_argv = ["--threads", "1", *worker_argv] if workers > 1 else worker_argv
            env_vars = {"PYTHONPATH": os.environ.get("PYTHONPATH", ""), "MPLBACKEND": "Agg",
                        **({KILL_ONCE_ENV: os.environ[KILL_ONCE_ENV]} if KILL_ONCE_ENV in os.environ else {})}
            ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), workers * 4)))
            # Decoding takes no CPU slot (num_cpus=0): the actors hold them all for the whole run on a
            # local Ray, and a decoder waiting for one would starve them. At most 2 videos decode at once.
            ds = ds.map_batches(expand, batch_size=1, fn_kwargs={"every": args.every, "chunk": batch},
                                num_cpus=0, compute=ray.data.TaskPoolStrategy(size=max(1, min(2, len(videos.clips)))),
                                runtime_env={"env_vars": env_vars})
            results = ds.map_batches(
                DensePoseActor, fn_constructor_kwargs={"worker_argv": worker_argv}, batch_size=batch,
                compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1,
                num_gpus=per_gpu or None, max_restarts=RESTARTS, max_task_retries=RESTARTS,
                runtime_env={"env_vars": env_vars})
            for result in results.iter_rows():
                record = json.loads(result["event"])
                if result["kind"] == "image":
                    failed += record["status"] == "error"
                    emit(record)
                else:
                    videos.take(str(result["kind"]), int(result["index"]), int(result["frame"]), record,
                                bytes(result["overlay"]))
            videos.finish()
    except Exception as exc:   # Ray or the actors could not start: the parent reports unprocessed inputs
        emit({"event": "fatal", "error": f"engine ray: {type(exc).__name__}: {' '.join(str(exc).split())}"[:400]})
        return FATAL_EXIT
    finally:
        if ours:
            import ray

            ray.shutdown()
    failed += videos.failed
    emit({"event": "done", "ok": total - failed, "failed": failed, "seconds": round(time.perf_counter() - started, 3)})
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
