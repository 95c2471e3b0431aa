"""`invoke predict`, parent side and the worker's torch-free parts: command, weights, progress
lines, summary, exit codes. The worker itself is replaced by a script printing canned lines."""
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from dpdeploy.inference import inputs, predict
from dpdeploy.inenv import model as dpmodel
from dpdeploy.inenv import predict_worker as worker

from .conftest import FIXTURES, ROOT


def request(tmp_path, **changes):
    base = dict(inputs=[str(tmp_path / "a.jpg"), str(tmp_path / "b c.png")], out=str(tmp_path / "out"),
                model="densepose_rcnn_R_50_FPN_s1x", python="/env/bin/python", weights="synthetic",
                synthetic_cache=str(tmp_path / "s.pth"), config_dirs=["/src/configs"])
    base.update(changes)
    return predict.Request(**base)


def test_worker_command_synthetic_and_real(tmp_path):
    cmd = predict.worker_command(request(tmp_path))
    assert cmd[:3] == ["/env/bin/python", "-m", "dpdeploy.inenv.predict_worker"]
    assert cmd[cmd.index("--max-detections") + 1] == str(predict.SYNTHETIC_MAX_DETECTIONS)
    assert cmd[cmd.index("--synthetic-cache") + 1] == str(tmp_path / "s.pth")
    assert cmd[cmd.index("--config-dir") + 1] == "/src/configs"
    assert cmd[cmd.index("--") + 1:] == [str(tmp_path / "a.jpg"), str(tmp_path / "b c.png")]
    real = predict.worker_command(request(tmp_path, weights="/w/model.pkl", vis=["dp_segm"], device="cuda"))
    assert "--max-detections" not in real and "--synthetic-cache" not in real
    assert real[real.index("--vis") + 1] == "dp_segm" and real[real.index("--device") + 1] == "cuda"
    # the worker's own parser accepts what the parent builds
    args = worker.parse_args(cmd[3:])
    assert args.inputs == [str(tmp_path / "a.jpg"), str(tmp_path / "b c.png")] and args.max_detections == 3


def test_worker_env_puts_the_repo_first():
    env = predict.worker_env({"PYTHONPATH": "/x"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "/x"] and env["MPLBACKEND"] == "Agg"


def test_worker_rejects_unknown_vis_and_synthetic_without_cache(capsys):
    with pytest.raises(SystemExit):
        worker.parse_args(["a.jpg", "--out", "o", "--model", "m", "--weights", "w", "--vis", "dp_nope"])
    with pytest.raises(SystemExit):
        worker.parse_args(["a.jpg", "--out", "o", "--model", "m", "--weights", "synthetic"])
    assert "synthetic-cache" in capsys.readouterr().err


def test_find_config_order_and_error(tmp_path):
    first, second = tmp_path / "first", tmp_path / "pkg" / "configs"
    for folder in (first, second):
        folder.mkdir(parents=True)
        (folder / "m.yaml").write_text("x")
    assert dpmodel.find_config("m", "", [str(first)], str(tmp_path / "pkg" / "densepose")) == first / "m.yaml"
    assert dpmodel.find_config("m", "", [], str(tmp_path / "pkg" / "densepose")) == second / "m.yaml"
    with pytest.raises(dpmodel.WorkerError, match="no config other.yaml.*--config"):
        dpmodel.find_config("other", "", [str(first)], None)


def test_tiny_charts_are_left_out_of_contours_only():
    results = [SimpleNamespace(labels=np.zeros(shape)) for shape in [(14, 28), (1, 5), (3, 3)]]
    boxes = np.arange(12).reshape(3, 4)
    notes = []
    kept, kept_boxes = dpmodel.drop_tiny_charts((results, boxes), notes)
    assert kept == [results[0], results[2]] and kept_boxes.tolist() == [boxes[0].tolist(), boxes[2].tolist()]
    assert notes == ["dp_contour: skipped 1 instance(s) whose box is smaller than 2x2 px"]
    assert dpmodel.drop_tiny_charts((None, None), notes) == (None, None)


def test_weights_resolution(tmp_path):
    import hashlib

    from dpdeploy.inference import weights as w

    spec = w.ModelSpec("m", "https://x/densepose/m/1/model_final_abc.pkl", hashlib.md5(b"w").hexdigest()[:6],
                       hashlib.sha256(b"w").hexdigest(), 1)
    assert predict.resolve_weights("synthetic", spec, tmp_path) == "synthetic"
    with pytest.raises(predict.PredictError) as err:
        predict.resolve_weights("", spec, tmp_path)
    assert str(err.value).startswith("no weights for m: run invoke weights, or pass --weights synthetic")
    cached = tmp_path / "cache" / "weights" / "m.pkl"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"w")
    assert predict.resolve_weights("", spec, tmp_path) == str(cached)
    with pytest.raises(predict.PredictError, match="no such file"):
        predict.resolve_weights(str(tmp_path / "nope.pkl"), spec, tmp_path)


def test_a_tampered_cached_file_is_not_used_pinned_or_trusted_on_first_use(tmp_path):
    """The cached file is used only while weights.cached() accepts it (one rule for predict,
    serve, the weights step and verify)."""
    import hashlib

    from dpdeploy.inference import weights as w

    payload = b"weights"
    pinned = w.ModelSpec("m", "https://x/densepose/m/1/model_final_abc.pkl", hashlib.md5(payload).hexdigest()[:6],
                         hashlib.sha256(payload).hexdigest(), len(payload))
    tofu = w.ModelSpec("t", pinned.url, pinned.md5_prefix, None, None)
    for spec in (pinned, tofu):
        path = w.final_path(tmp_path, spec.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
        if spec is tofu:
            (path.parent / "t.pkl.json").write_text(json.dumps({"trust": "tofu", "size": len(payload),
                                                                 "sha256": hashlib.sha256(payload).hexdigest()}))
        assert predict.resolve_weights("", spec, tmp_path) == str(path)
        # same length, same md5 prefix is not needed to fail: any change is caught by the sha256
        path.write_bytes(b"weightZ")
        with pytest.raises(predict.PredictError, match=f"the cached weights {path} no longer verify"):
            predict.resolve_weights("", spec, tmp_path)


def test_parse_event_ignores_logs():
    assert predict.parse_event('{"event": "done", "ok": 1}') == {"event": "done", "ok": 1}
    for line in ["WARNING something", "{not json", '{"no_event": 1}', "[1, 2]"]:
        assert predict.parse_event(line) is None


def canned_stream(lines, code):
    def stream(argv, *, log_path, env, echo):
        assert argv[1:3] == ["-m", "dpdeploy.inenv.predict_worker"]
        with open(log_path, "a") as log:
            for line in lines:
                log.write(line + "\n")
                echo(line)
        return code
    return stream


def test_run_keeps_a_summary_and_marks_what_never_ran(tmp_path):
    req = request(tmp_path, inputs=["/p/a.jpg", "/p/b.jpg", "/p/c.jpg"])
    lines = [
        json.dumps({"event": "ready", "load_s": 2.0, "config": "/c.yaml", "weights": "/s.pth", "notes": ["built"]}),
        "some warning on stderr",
        json.dumps({"event": "image", "index": 1, "input": "/p/a.jpg", "stem": "a", "status": "ok", "instances": 2,
                    "notes": [], "timings": {"total_s": 1.5}}),
        json.dumps({"event": "image", "index": 2, "input": "/p/b.jpg", "stem": "b", "status": "error",
                    "error": "truncated or corrupt image: x"}),
    ]
    seen = []
    summary = predict.start_summary(req, skipped=["/p/notes.txt"])
    predict.run(req, summary, tmp_path / "worker.log", on_event=seen.append, stream=canned_stream(lines, -9))
    assert [e["event"] for e in seen] == ["ready", "image", "image"]
    data = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [i["status"] for i in data["images"]] == ["ok", "error", "error"]
    assert data["images"][2]["error"] == "not processed: the worker exited with status -9 before this file"
    assert data["ok"] == 1 and data["failed"] == 2 and data["success"] is False
    assert data["weights_kind"] == "synthetic" and data["model_load_s"] == 2.0 and data["skipped"] == ["/p/notes.txt"]
    assert predict.log_tail(tmp_path / "worker.log") == "some warning on stderr"


def test_fatal_marks_every_file_with_the_reason(tmp_path):
    req = request(tmp_path, inputs=["/p/a.jpg"])
    summary = predict.start_summary(req)
    predict.run(req, summary, tmp_path / "w.log",
                stream=canned_stream([json.dumps({"event": "fatal", "error": "WorkerError: weights x not found"})], 3))
    assert summary.images[0]["error"] == "not processed: WorkerError: weights x not found" and not summary.success


def test_all_ok_is_success(tmp_path):
    req = request(tmp_path, inputs=["/p/a.jpg"])
    summary = predict.start_summary(req)
    ok = json.dumps({"event": "image", "index": 1, "input": "/p/a.jpg", "stem": "a", "status": "ok", "instances": 0})
    predict.run(req, summary, tmp_path / "w.log", stream=canned_stream([ok], 0))
    assert summary.success and summary.ok == 1


# --- the task as a user runs it, with a stand-in env whose python prints canned progress -------

FAKE_PYTHON = """#!/bin/sh
# stands in for <prefix>/bin/python: prints the worker's progress protocol for two images
echo "loading..." >&2
echo '{"event": "ready", "load_s": 0.5, "config": "/c.yaml", "weights": "/s.pth", "notes": []}'
echo '{"event": "image", "index": 1, "input": "a", "stem": "a", "status": "ok", "instances": 1, '\
'"notes": ["rotated by EXIF orientation 6"], "timings": {"total_s": 1.0}}'
echo '{"event": "image", "index": 2, "input": "b", "stem": "b", "status": "error", "error": "empty file (0 bytes)"}'
exit 1
"""


def invoke(args, home, check_code):
    env = {**os.environ, "DPDEPLOY_HOME": str(home), "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "invoke", "predict", *args], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == check_code, proc.stdout + proc.stderr
    return proc


def test_cli_refuses_without_env_or_weights_and_writes_nothing(tmp_path):
    img = tmp_path / "a.jpg"
    img.write_bytes(b"x")
    proc = invoke([str(img), "--prefix", str(tmp_path / "noenv")], tmp_path / "home", 2)
    assert "no DensePose environment at" in proc.stderr and "invoke setup" in proc.stderr
    (tmp_path / "env" / "bin").mkdir(parents=True)
    (tmp_path / "env" / "bin" / "python").write_text("")
    proc = invoke([str(img), "--prefix", str(tmp_path / "env")], tmp_path / "home", 2)
    assert "no weights for densepose_rcnn_R_50_FPN_s1x: run invoke weights" in proc.stderr
    proc = invoke([str(img), "--prefix", str(tmp_path / "env"), "--vis", "dp_x", "--json"], tmp_path / "home", 2)
    assert "unknown dp_x" in json.loads(proc.stdout)["error"]
    assert not (tmp_path / "home" / "runs").exists(), "a refusal must not leave a run record"


def test_cli_end_to_end_with_a_stand_in_worker(tmp_path):
    python = tmp_path / "env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    photos = tmp_path / "my photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"x")
    (photos / "b.jpg").write_bytes(b"")
    # one stand-in worker for both images (by default a CPU run has one worker per core)
    proc = invoke([str(photos), "--prefix", str(tmp_path / "env"), "--weights", "synthetic", "--json", "--workers", "1"],
                  tmp_path / "home", 1)
    summary = json.loads(proc.stdout)
    assert [i["status"] for i in summary["images"]] == ["ok", "error"] and summary["weights_kind"] == "synthetic"
    record = Path(summary["run"])
    assert record.name.endswith("-predict") and record.parent == tmp_path / "home" / "runs"
    assert json.loads((record / "predict" / "summary.json").read_text())["failed"] == 1
    command = (record / "command.txt").read_text()
    assert "predict" in command.splitlines()[0] and "dpdeploy.inenv.predict_worker" in command
    log = (record / "terminal.log").read_text()
    assert "\x1b[" in log, "terminal.log keeps the ANSI colours"
    assert "empty file (0 bytes)" in log and "1 ok, 1 failed" in log and "synthetic" in log
    assert "loading..." in (record / "logs" / "worker.log").read_text()


def test_config_dirs_put_the_envs_own_copy_before_the_kept_sources(tmp_path):
    home, prefix = tmp_path / "home", tmp_path / "env"
    kept = home / "cache" / "src" / "detectron2-abc" / "projects" / "DensePose" / "configs"
    kept.mkdir(parents=True)
    assert predict.config_dirs(home, str(prefix)) == [str(kept)]   # an env built before configs were copied
    (prefix / "share" / "densepose" / "configs").mkdir(parents=True)
    assert predict.config_dirs(home, str(prefix)) == [str(prefix / "share" / "densepose" / "configs"), str(kept)]
    assert predict.config_dirs(tmp_path / "nohome") == []


# --- a request is checked before the model loads: refusals exit 2, one line, no run record -----

def _refused(args, home, text, env=None):
    full = {**os.environ, "DPDEPLOY_HOME": str(home), "NO_COLOR": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "invoke", "predict", *args], cwd=ROOT, capture_output=True,
                          text=True, env=full, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert text in proc.stderr, proc.stderr
    assert not (home / "runs").exists() or not any((home / "runs").iterdir()), "a refusal leaves no run record"


@pytest.fixture
def ready(tmp_path):
    """An image, an env that exists (never run: every case is refused first) and synthetic weights."""
    python = tmp_path / "env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\nexit 99\n")
    python.chmod(0o755)
    img = tmp_path / "a.jpg"
    img.write_bytes(b"x")
    return [str(img), "--prefix", str(tmp_path / "env"), "--weights", "synthetic"]


def test_out_that_is_a_file_is_refused(tmp_path, ready):
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    _refused([*ready, "--out", str(taken)], tmp_path / "home", "is a file, not a folder")
    _refused([*ready, "--out", str(taken / "sub")], tmp_path / "home", "is a file, so the folder cannot be created")
    assert taken.read_text() == "mine"


def test_out_that_cannot_be_written_is_refused(tmp_path, ready):
    # /proc refuses new files even for root (chmod does not stop root)
    _refused([*ready, "--out", "/proc/dpdeploy-out"], tmp_path / "home", "cannot write in /proc")


def test_cuda_without_a_gpu_is_refused_before_the_model_loads(tmp_path, ready):
    _refused([*ready, "--device", "cuda"], tmp_path / "home", "this host has no NVIDIA GPU",
             env={"DPDEPLOY_FACTS": str(FIXTURES / "facts" / "nogpu.json")})


def test_nonexistent_input_is_refused(tmp_path, ready):
    _refused([f"{ready[0]},{tmp_path / 'missing.jpg'}", *ready[1:]], tmp_path / "home",
             f"no such file or folder: {tmp_path / 'missing.jpg'}")


@pytest.mark.parametrize("change, text", [
    ({0: ""}, "no input given ('')"),
    ({0: " , "}, "no input given"),
    ({"add": ["--max-size", "0"]}, "--max-size 0: the longest image side must be 1 pixel or more"),
    ({"add": ["--max-size", "-5"]}, "--max-size -5"),
    ({"add": ["--max-detections", "-1"]}, "--max-detections -1: must be 0"),
])
def test_empty_inputs_and_sizes_out_of_range_are_refused_before_anything_starts(tmp_path, ready, change, text):
    """An empty spec must not mean "the images of the current folder" (the checkout here)."""
    args = [change.get(0, ready[0]), *ready[1:], "--device", "cpu", *change.get("add", [])]
    _refused(args, tmp_path / "home", text)


def test_full_disk_and_gpu_index_checks():
    with pytest.raises(predict.PredictError, match="this host has 1 GPU"):
        predict.check_device("cuda:1", 1)
    predict.check_device("cuda:0", 1)
    predict.check_device("cpu", 0)


def test_full_disk_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(predict.shutil, "disk_usage", lambda p: SimpleNamespace(free=10 * 2**20))
    with pytest.raises(predict.PredictError, match=r"only 10 MiB free .*free some space"):
        predict.check_writable(tmp_path / "out", "--out")
    assert list(tmp_path.iterdir()) == []


# --- several devices: one worker each, inputs dealt by size, one merged summary ------------

SHARD_PYTHON = """#!/usr/bin/env python3
# stands in for <prefix>/bin/python: reports each of its inputs; dies (SIGKILL) at one named die*
# (leaving its pid in die.pid); one named after* is reported only once that worker is gone
import json, os, signal, sys, time
args = sys.argv[sys.argv.index("--") + 1:]
device = sys.argv[sys.argv.index("--device") + 1]
threads = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else ""
print(json.dumps({"event": "ready", "load_s": 1.0, "device": device, "precision": "fp32", "batch_size": 2}))
for n, path in enumerate(args, 1):
    marker = os.path.join(os.path.dirname(sys.argv[0]), "die.pid")
    if os.path.basename(path).startswith("die"):
        sys.stdout.flush()
        open(marker, "w").write(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    if os.path.basename(path).startswith("after"):
        while not os.path.exists(marker) or os.path.exists("/proc/" + open(marker).read()):
            time.sleep(0.05)
        time.sleep(0.5)   # the parent marks the dead worker's inputs right after reaping it
    print(json.dumps({"event": "image", "index": n, "input": path, "stem": os.path.basename(path), "status": "ok",
                      "instances": 1, "notes": [device + " threads " + threads], "timings": {"total_s": 0.1}}))
"""


def shard_env(tmp_path):
    python = tmp_path / "env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(SHARD_PYTHON)
    python.chmod(0o755)
    return str(python)


def test_shards_deal_inputs_round_robin_and_each_worker_gets_its_own(tmp_path):
    req = request(tmp_path, inputs=[f"/p/{n}.jpg" for n in "abcde"], devices=["cuda:0", "cuda:1"])
    assert predict.shards(req) == [("cuda:0", [0, 2, 4]), ("cuda:1", [1, 3])]
    cmd = predict.worker_command(req, "cuda:1", [1, 3])
    args = worker.parse_args(cmd[3:])
    assert args.inputs == ["/p/b.jpg", "/p/d.jpg"] and args.stems == ["b", "d"] and args.device == "cuda:1"
    assert predict.shards(request(tmp_path, inputs=["/p/a.jpg"], devices=["cpu", "cpu"])) == [("cpu", [0])]
    assert predict.shards(request(tmp_path)) == [("cpu", [0, 1])]


def test_shards_balance_the_work_by_aspect_ratio_and_put_videos_first(tmp_path):
    """Four wide and four square photos, sorted square/wide alternately: dealt round-robin one
    worker would get every wide one; balanced, each gets two of each. A video counts for many
    photos; a file that does not open counts for none."""
    from PIL import Image

    for n in range(4):
        Image.new("RGB", (512, 600)).save(tmp_path / f"{n}-tall.jpg")
        Image.new("RGB", (512, 512)).save(tmp_path / f"{n}-square.png")
    files = sorted(str(p) for p in tmp_path.iterdir())
    assert [round(inputs.work_estimate(f), 3) for f in files[:2]] == [1.0, 1.172]
    parts = predict.shards(request(tmp_path, inputs=files, devices=["cpu", "cpu"]))
    for _, part in parts:
        assert sorted("tall" in files[i] for i in part) == [False, False, True, True], parts
        assert part == sorted(part)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    assert inputs.work_estimate(str(tmp_path / "broken.jpg")) == 0.0
    assert inputs.work_estimate(str(tmp_path / "gone.jpg")) == 0.0
    assert inputs.work_estimate(str(tmp_path / "clip.mp4")) == inputs.VIDEO_WEIGHT
    assert inputs.deal([1.0, 1.0, inputs.VIDEO_WEIGHT, 1.0], 2) == [[2], [0, 1, 3]]
    assert inputs.deal([0.0] * 5, 2) == [[0, 2, 4], [1, 3]]


def test_worker_env_keeps_large_blocks_in_glibcs_heap(tmp_path):
    """The tunables reach a real process: a freed 64 MiB block is served from the heap, not by
    mmap (mallinfo2's hblkhd stays 0); a GLIBC_TUNABLES of the user's own is kept."""
    probe = ("import ctypes\n"
             "class Info(ctypes.Structure):\n"
             "    _fields_ = [(n, ctypes.c_size_t) for n in 'arena ordblks smblks hblks hblkhd usmblks fsmblks "
             "uordblks fordblks keepcost'.split()]\n"
             "libc = ctypes.CDLL('libc.so.6'); libc.malloc.restype = ctypes.c_void_p; libc.mallinfo2.restype = Info\n"
             "p = libc.malloc(64 << 20); print(libc.mallinfo2().hblkhd); libc.free(ctypes.c_void_p(p))")
    plain = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}

    def mmapped(env):
        return int(subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                                  check=True).stdout)

    assert mmapped(plain) >= 64 << 20
    assert mmapped(predict.worker_env(plain)) == 0
    assert predict.worker_env({**plain, "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})["GLIBC_TUNABLES"] \
        == "glibc.malloc.arena_max=2"


def test_cpu_workers_standing_in_for_gpus_merge_into_one_summary(tmp_path):
    """Two CPU workers (the multi-GPU code path, a device list of CPUs); one dies at die.jpg: only
    its unreported inputs are lost, each says which worker, the rest of the run completes."""
    names = ["a", "b", "die", "after", "d"]
    req = request(tmp_path, inputs=[f"/p/{n}.jpg" for n in names], python=shard_env(tmp_path), devices=["cpu", "cpu"])
    seen = []
    summary = predict.run(req, predict.start_summary(req), tmp_path / "worker.log", on_event=seen.append)
    by_stem = {Path(i["input"]).stem: i for i in summary.images}
    assert [Path(i["input"]).stem for i in summary.images] == names, "the summary keeps the input order"
    assert [by_stem[n]["status"] for n in names] == ["ok", "ok", "error", "ok", "error"], "the other worker goes on"
    for lost in ("die", "d"):   # worker 1 had a, die, d: it reported a, then died
        assert by_stem[lost]["error"] == ("not processed: the worker exited with status -9 before this file "
                                          "(worker 1 of 2, on cpu)")
    assert summary.workers == [{"device": "cpu", "images": 3, "exit": -9}, {"device": "cpu", "images": 2, "exit": 0}]
    assert summary.worker_exit == -9 and not summary.success and summary.ok == 3
    images = sorted(e["index"] for e in seen if e["event"] == "image")
    assert images == [1, 2, 4] and all(e["total"] == 5 for e in seen if e["event"] == "image")
    assert by_stem["a"]["notes"] == [f"cpu threads {predict._cpu_threads(2)[0]}"], "CPU workers split the cores"
    assert (tmp_path / "worker.log").exists() and (tmp_path / "worker-1.log").exists()
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["schema_version"] == 2 and on_disk["workers"][0]["exit"] == -9 and on_disk["batch_size"] == 2


def test_gpus_flag_and_devices():
    assert predict.parse_gpus("", "cuda", 2) == ["cuda:0", "cuda:1"]
    assert predict.parse_gpus("1", "cuda", 2) == ["cuda:1"]
    assert predict.parse_gpus("", "cuda:1", 2) == ["cuda:1"] and predict.parse_gpus("", "cpu", 0) == ["cpu"]
    for text, device, gpus, message in [("0,2", "cuda", 2, "this host has 2 GPU"), ("0,0", "cuda", 2, "distinct"),
                                        ("0", "cpu", 0, "needs --device cuda")]:
        with pytest.raises(predict.PredictError, match=message):
            predict.parse_gpus(text, device, gpus)


def test_precision_a_device_cannot_serve_is_refused():
    predict.check_precision("bf16", "cpu", has_bf16=lambda: True)
    with pytest.raises(predict.PredictError, match="lists no avx512_bf16"):
        predict.check_precision("bf16", "cpu", has_bf16=lambda: False)
    with pytest.raises(predict.PredictError, match="fp16 on cpu"):
        predict.check_precision("fp16", "cpu")
    old = SimpleNamespace(name="Tesla T4", compute_capability="7.5")
    with pytest.raises(predict.PredictError, match="Tesla T4 .*7.5.* use --precision fp16"):
        predict.check_precision("bf16", "cuda", [old])
    predict.check_precision("fp16", "cuda", [old])
    predict.check_precision("bf16", "cuda", [SimpleNamespace(name="H100", compute_capability="9.0")])
    with pytest.raises(predict.PredictError, match="choose from fp32, bf16, fp16"):
        predict.check_precision("int8", "cpu")


def test_cpu_bf16_flag_detection():
    from dpdeploy.host.probe import cpu_has_bf16

    assert cpu_has_bf16("processor: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n")
    assert not cpu_has_bf16("flags\t\t: fpu avx2 avx512f\n") and not cpu_has_bf16("")


def test_fp16_on_cpu_is_refused_before_the_model_loads(tmp_path, ready):
    _refused([*ready, "--device", "cpu", "--precision", "fp16"], tmp_path / "home", "--precision fp16 on cpu")
    _refused([*ready, "--device", "cpu", "--gpus", "0"], tmp_path / "home", "--gpus 0: needs --device cuda")


def test_a_version_1_summary_reads_as_fp32_one_worker(tmp_path):
    from dpdeploy.records import predict_summary

    old = {"schema_version": 1, "model": "m", "weights": "w", "weights_kind": "real", "device": "cpu", "out": "o",
           "images": [{"input": "a.jpg", "stem": "a", "status": "ok"}], "worker_exit": 0}
    (tmp_path / "summary.json").write_text(json.dumps(old))
    summary = predict_summary.read(tmp_path)
    assert summary.precision == "fp32" and summary.batch_size == 1 and summary.workers == [] and summary.success
    (tmp_path / "summary.json").write_text(json.dumps({**old, "schema_version": 7}))
    with pytest.raises(Exception, match="schema version 7"):
        predict_summary.read(tmp_path)


def test_cpu_workers_one_per_core_as_inputs_and_memory_allow(tmp_path):
    assert predict.cpu_workers(0, inputs=8, cpus=2, available=20_000) == 2
    assert predict.cpu_workers(0, inputs=1, cpus=16, available=20_000) == 1          # one image: every core on it
    assert predict.cpu_workers(0, inputs=64, cpus=16, available=3 * predict.CPU_WORKER_MIB) == 3
    assert predict.cpu_workers(0, inputs=8, cpus=2, available=100) == 1
    assert predict.cpu_workers(0, inputs=8, cpus=4, available=0) == 4               # unknown memory: cores decide
    assert predict.cpu_workers(3, inputs=8, cpus=2, available=100) == 3              # asked for: given
    assert predict.cpu_workers(5, inputs=2, cpus=8, available=20_000) == 2
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   8388608 kB\n")
    assert predict.available_mib(str(meminfo)) == 8192 and predict.available_mib(str(tmp_path / "none")) == 0


def test_workers_on_gpus_are_refused_for_gpus_flag(tmp_path, ready):
    _refused([*ready, "--device", "cuda", "--workers", "2"], tmp_path / "home",
             "--workers 2 with --device cuda: one worker runs per GPU; pick them with --gpus",
             env={"DPDEPLOY_FACTS": str(FIXTURES / "facts" / "h100.json")})
