"""The predict worker's pipeline (dpdeploy/inenv/pipeline.py) with stand-in load / infer / finish:
batches, order, errors kept per job, out-of-memory batches split, the prefetch bound."""
import threading
import time

import pytest

from dpdeploy.inenv import pipeline
from dpdeploy.inenv.pipeline import Job


class Recorder:
    def __init__(self):
        self.batches, self.done, self.lock = [], [], threading.Lock()

    def infer(self, batch):
        self.batches.append(list(batch))
        return [f"out-{v}" for v in batch]

    def finish(self, key, loaded, out):
        return (key, loaded, out)

    def record(self, job, value, error):
        self.done.append((job.key, value, error))


def jobs(n, bad=()):
    def load(i):
        if i in bad:
            raise ValueError(f"bad {i}")
        return i
    return [Job(i, lambda i=i: load(i)) for i in range(n)]


def test_batches_in_order_and_done_in_job_order():
    r = Recorder()
    pipeline.run(jobs(10), infer=r.infer, finish=r.finish, done=r.record, batch_size=3, prefetch=4, loaders=2,
                 writers=3)
    assert [len(b) for b in r.batches] == [3, 3, 3, 1]
    assert [key for key, _, _ in r.done] == list(range(10))
    assert all(error is None and value == (k, k, f"out-{k}") for k, value, error in r.done)


def test_a_bad_load_fails_only_its_job():
    r = Recorder()
    pipeline.run(jobs(6, bad={2}), infer=r.infer, finish=r.finish, done=r.record, batch_size=4)
    errors = {k: e for k, _, e in r.done if e is not None}
    assert list(errors) == [2] and str(errors[2]) == "bad 2"
    assert [k for k, _, _ in r.done] == list(range(6))
    assert sorted(v for b in r.batches for v in b) == [0, 1, 3, 4, 5]


def test_out_of_memory_batch_is_split_not_failed():
    r = Recorder()

    def infer(batch):
        if len(batch) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return r.infer(batch)

    pipeline.run(jobs(8), infer=infer, finish=r.finish, done=r.record, batch_size=8,
                 is_oom=lambda exc: "out of memory" in str(exc))
    assert [len(b) for b in r.batches] == [2, 2, 2, 2]
    assert all(e is None for _, _, e in r.done) and len(r.done) == 8


def test_a_batch_that_fails_otherwise_is_run_image_by_image():
    r = Recorder()

    def infer(batch):
        if 5 in batch:
            raise ValueError("input 5 breaks the model")
        return r.infer(batch)

    pipeline.run(jobs(8), infer=infer, finish=r.finish, done=r.record, batch_size=4)
    errors = {k: str(e) for k, _, e in r.done if e is not None}
    assert errors == {5: "input 5 breaks the model"}
    assert [k for k, _, _ in r.done] == list(range(8))


def test_a_failing_finish_fails_its_job_only():
    r = Recorder()

    def finish(key, loaded, out):
        if key == 1:
            raise OSError("disk full")
        return key

    pipeline.run(jobs(3), infer=r.infer, finish=finish, done=r.record, batch_size=2, writers=2)
    assert [(k, v, str(e) if e else None) for k, v, e in r.done] == [(0, 0, None), (1, None, "disk full"),
                                                                    (2, 2, None)]


def test_pass_through_jobs_come_after_everything_before_them():
    r = Recorder()
    work = jobs(3) + [Job("end", lambda: "summary", infer=False)] + [Job(9, lambda: 9)]
    pipeline.run(work, infer=r.infer, finish=r.finish, done=r.record, batch_size=4)
    assert [k for k, _, _ in r.done] == [0, 1, 2, "end", 9]
    assert r.done[3][1] == "summary" and sorted(v for b in r.batches for v in b) == [0, 1, 2, 9]


def test_a_batch_holds_one_group_and_done_keeps_job_order():
    """Two input sizes alternating: batches of one size each (no padding to the other's size)."""
    r = Recorder()
    pipeline.run(jobs(9), infer=r.infer, finish=r.finish, done=r.record, batch_size=2, writers=2,
                 group=lambda loaded: loaded % 2)
    assert [sorted({v % 2 for v in b}) for b in r.batches] == [[0], [1], [0], [1], [0]]
    assert [len(b) for b in r.batches] == [2, 2, 2, 2, 1]
    assert [k for k, _, _ in r.done] == list(range(9)) and all(e is None for _, _, e in r.done)


def test_a_batch_that_never_fills_is_run_when_its_job_is_the_oldest():
    """One image of a size no other has, then many of another: it is not held to the end."""
    r = Recorder()
    worker = threading.Thread(target=pipeline.run, args=(jobs(30),), kwargs=dict(
        infer=r.infer, finish=r.finish, done=r.record, batch_size=4, group=lambda loaded: loaded == 0), daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the pipeline waits forever for the lone image's batch"
    assert [k for k, _, _ in r.done] == list(range(30))
    assert r.batches.index([0]) < len(r.batches) - 2, "the lone image ran only at the end"


def test_loading_runs_at_most_prefetch_ahead_of_the_model():
    loaded, inferred, ahead = [], [], []

    def load(i):
        loaded.append(i)
        return i

    def infer(batch):
        time.sleep(0.02)   # a slow model: an unbounded loader would run far ahead
        inferred.extend(batch)
        ahead.append(len(loaded) - len(inferred))
        return batch

    pipeline.run([Job(i, lambda i=i: load(i)) for i in range(30)], infer=infer, finish=lambda key, loaded, out: out,
                 done=lambda j, v, e: None, batch_size=1, prefetch=3)
    assert len(inferred) == 30 and max(ahead) <= 3 + 2   # the queue, the item being put, the one in hand


def test_a_broken_job_source_ends_the_run_after_what_it_gave():
    r = Recorder()

    def source():
        yield from jobs(3)
        raise RuntimeError("lost the input list")

    with pytest.raises(RuntimeError, match="lost the input list"):
        pipeline.run(source(), infer=r.infer, finish=r.finish, done=r.record, batch_size=2)
    assert [k for k, _, _ in r.done] == [0, 1, 2]


def test_default_batch_size():
    assert pipeline.default_batch_size("cpu", None, 2) == 2 and pipeline.default_batch_size("cpu", None, 1) == 1
    assert pipeline.default_batch_size("cuda:0", 80_000, 16) == 16
    assert pipeline.default_batch_size("cuda", 4_000, 16) == 2 and pipeline.default_batch_size("cuda", 500, 4) == 1
