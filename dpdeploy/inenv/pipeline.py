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
from typing import Any, Callable, Hashable, Iterable, Optional

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
        is_oom: Callable[[BaseException], bool] = lambda exc: False,
        group: Callable[[Any], Hashable] = lambda loaded: None) -> None:
    """Run every job: ``infer([loaded, ...])``, ``finish(key, loaded, output)``, then
    ``done(job, finished or loaded, error)`` in job order (error: what load, infer or finish raised).
    A batch holds loaded values of one ``group`` only (e.g. one input size: a batch pads its images
    to the largest, which changes the numbers near the borders of the smaller ones)."""
    ahead: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()
    held_limit = 2 * max(1, batch_size) + 2 * max(1, writers)   # jobs waiting for their batch or their writer
    with ThreadPoolExecutor(max(1, loaders), thread_name_prefix="load") as load_pool, \
            ThreadPoolExecutor(max(1, writers), thread_name_prefix="write") as write_pool:
        producer = threading.Thread(target=_produce, args=(jobs, load_pool, ahead, stop), daemon=True)
        producer.start()
        pending: deque[tuple[Job, Future]] = deque()            # every job, in order, with its outcome
        groups: dict[Hashable, list[tuple[Job, Any, Future]]] = {}   # batches being filled
        waiting: dict[int, Hashable] = {}                       # id(outcome) -> its group, until inferred

        def flush(key: Hashable) -> None:
            members = groups.pop(key)
            outputs = split_infer(infer, [loaded for _, loaded, _ in members], is_oom)
            for (job, loaded, outcome), out in zip(members, outputs, strict=True):
                del waiting[id(outcome)]
                if isinstance(out, BaseException):
                    outcome.set_exception(out)
                else:
                    _chain(write_pool.submit(finish, job.key, loaded, out), outcome)

        def settle(limit: int) -> None:
            while pending and (len(pending) > limit or pending[0][1].done()):
                job, outcome = pending[0]
                if id(outcome) in waiting:   # the oldest job waits for a batch that is not full: run it now
                    flush(waiting[id(outcome)])
                pending.popleft()
                error = outcome.exception()
                done(job, None if error else outcome.result(), error)

        def drain() -> None:
            for key in list(groups):
                flush(key)
            settle(0)

        try:
            while (item := ahead.get()) is not _END:
                job, fut = item
                if job is None:   # the job source broke
                    drain()
                    raise fut.exception()
                outcome: Future = Future()
                pending.append((job, outcome))
                if fut.exception() is not None or not job.infer:
                    _chain(fut, outcome)
                else:
                    loaded = fut.result()
                    key = group(loaded)
                    groups.setdefault(key, []).append((job, loaded, outcome))
                    waiting[id(outcome)] = key
                    if len(groups[key]) >= batch_size:
                        flush(key)
                settle(held_limit)
            drain()
        finally:
            stop.set()
            while producer.is_alive():   # unblock a producer waiting on a full queue
                try:
                    ahead.get_nowait()
                except queue.Empty:
                    producer.join(0.05)


def _chain(source: Future, target: Future) -> None:
    """``target`` gets ``source``'s result or exception once it has one."""
    def copy(f: Future) -> None:
        if f.exception() is not None:
            target.set_exception(f.exception())
        else:
            target.set_result(f.result())
    source.add_done_callback(copy)


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

