"""The predict worker's pipeline: load ahead, infer in batches, finish behind. Standard library only.

Jobs are loaded on ``loaders`` threads (at most ``prefetch`` loaded ahead of the model), the
model runs on the calling thread a batch at a time, each result is finished (drawn, encoded,
written) on ``writers`` threads, and ``done`` is called on the calling thread in job order.
A batch that runs out of memory is split in halves; a batch that fails otherwise is run image
by image, so an error stays with the one input that caused it.
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

_END = object()


@dataclass
class Job:
    key: Any                       # what the caller needs to finish it; opaque here
    load: Callable[[], Any]        # runs on a loader thread
    infer: bool = True             # False: no model, no finish; ``done`` gets the loaded value in order


def split_infer(infer: Callable[[list[Any]], list[Any]], batch: list[Any],
                is_oom: Callable[[BaseException], bool]) -> list[Any]:
    """``infer(batch)``, each element its output or the exception that input raised."""
    try:
        outputs = infer(batch)
    except Exception as exc:
        if len(batch) == 1:
            return [exc]
        if is_oom(exc):
            half = len(batch) // 2
            return split_infer(infer, batch[:half], is_oom) + split_infer(infer, batch[half:], is_oom)
        return [out for item in batch for out in split_infer(infer, [item], is_oom)]
    if len(outputs) != len(batch):
        raise RuntimeError(f"the model returned {len(outputs)} outputs for {len(batch)} inputs")
    return list(outputs)


def run(jobs: Iterable[Job], *, infer: Callable[[list[Any]], list[Any]],
        finish: Callable[[Any, Any, Any], Any], done: Callable[[Job, Any, Optional[BaseException]], None],
        batch_size: int = 1, prefetch: int = 4, loaders: int = 1, writers: int = 1,
        is_oom: Callable[[BaseException], bool] = lambda exc: False) -> None:
    """Run every job: ``infer([loaded, ...])``, ``finish(key, loaded, output)``, then
    ``done(job, finished or loaded, error)`` in job order (error: what load, infer or finish raised)."""
    ahead: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()
    with ThreadPoolExecutor(max(1, loaders), thread_name_prefix="load") as load_pool, \
            ThreadPoolExecutor(max(1, writers), thread_name_prefix="write") as write_pool:
        producer = threading.Thread(target=_produce, args=(jobs, load_pool, ahead, stop), daemon=True)
        producer.start()
        pending: deque[tuple[Job, Future]] = deque()
        batch: list[tuple[Job, Any]] = []

        def settle(limit: int) -> None:
            while len(pending) > limit or (pending and pending[0][1].done()):
                job, fut = pending.popleft()
                error = fut.exception()
                done(job, None if error else fut.result(), error)

        def flush() -> None:
            if not batch:
                return
            outputs = split_infer(infer, [loaded for _, loaded in batch], is_oom)
            for (job, loaded), out in zip(batch, outputs, strict=True):
                pending.append((job, _failed(out) if isinstance(out, BaseException)
                                else write_pool.submit(finish, job.key, loaded, out)))
            batch.clear()
            settle(2 * max(1, writers))

        try:
            while (item := ahead.get()) is not _END:
                job, fut = item
                error = fut.exception()
                if job is None:
                    flush()
                    settle(0)
                    raise error
                if error is not None or not job.infer:
                    flush()
                    settle(0)
                    done(job, None if error else fut.result(), error)
                    continue
                batch.append((job, fut.result()))
                if len(batch) >= batch_size:
                    flush()
            flush()
            settle(0)
        finally:
            stop.set()
            while producer.is_alive():   # unblock a producer waiting on a full queue
                try:
                    ahead.get_nowait()
                except queue.Empty:
                    producer.join(0.05)


def _produce(jobs: Iterable[Job], pool: ThreadPoolExecutor, ahead: queue.Queue, stop: threading.Event) -> None:
    try:
        for job in jobs:
            if stop.is_set():
                return
            ahead.put((job, pool.submit(job.load)))
    except Exception as exc:   # a broken job source: the run ends with what it gave, then raises
        ahead.put((None, _failed(exc)))
    finally:
        ahead.put(_END)


def _failed(exc: BaseException) -> Future:
    fut: Future = Future()
    fut.set_exception(exc)
    return fut


def default_batch_size(device: str, free_mib: Optional[int], cpus: int) -> int:
    """Images per forward pass: on a GPU one per ~1.5 GiB free (1 to 16); on a CPU 2 (the
    model's threads are busy either way; a pair fills the gaps between its small ops)."""
    if device.startswith("cuda"):
        return max(1, min(16, (free_mib or 0) // 1536))
    return 2 if cpus > 1 else 1

