"""The Ray engines in a real DensePose env with Ray (profile cpu-ray): a real local Ray on 127.0.0.1
with two CPU workers and the synthetic checkpoint. Batch (`invoke predict --engine ray`): a folder
with bad files, a re-run that resumes, a worker killed mid-run. Videos through Ray: frames in order, the
overlay video, a truncated one, a re-run that skips the complete one. Online (`invoke serve`): good and
bad images, multipart, a token, oversize bodies and overload.

The env: DPDEPLOY_TEST_RAY_ENV=<prefix of a cpu-ray env>, else `invoke setup --profile cpu-ray
--only env,build` in the session's deployment's state root (``ray_d2_env``, tests/conftest.py).
~4-6 min on 2 CPU cores, plus the env's install."""
import base64
import concurrent.futures as cf
import io
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from dpdeploy.build.wheels import ENV_CONFIGS
from dpdeploy.inenv.ray_batch import KILL_ONCE_ENV
from dpdeploy.inference import predict, samples, serve as service
from dpdeploy.inference.inputs import collect
from dpdeploy.plan import matrix as matrix_mod

from . import bad_inputs
from .test_predict_env import make_video, video_info

pytestmark = [pytest.mark.slow, pytest.mark.detectron2]
KEEP_OK = {"photo with spaces.jpg", "gray.png", "rgba.png"}   # a few good ones: each costs a forward pass
TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def ray_env(ray_d2_env):
    predict.check_env_has_ray(str(ray_d2_env))   # a cpu-ray env without Ray is a failure, not a skip
    return ray_d2_env


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> str:
    """One synthetic checkpoint for the module (built by the first actor that needs it)."""
    return str(tmp_path_factory.mktemp("weights") / "synthetic.pth")


def ray_request(env: Path, tmp_path: Path, inputs, synthetic: str, **changes) -> predict.Request:
    return predict.Request(inputs=inputs, out=str(tmp_path / "out"), model="densepose_rcnn_R_50_FPN_s1x",
                           python=str(env / "bin" / "python"), weights="synthetic",
                           config_dirs=[str(env / ENV_CONFIGS)], synthetic_cache=synthetic,
                           engine="ray", workers=2, **changes)


def folder_with_bad_files(folder: Path) -> dict:
    expect = bad_inputs.make(folder, huge=False)
    for name, (status, *_) in list(expect.items()):
        if status == "ok" and name not in KEEP_OK:
            (folder / name).unlink()
            del expect[name]
    return expect


def test_batch_over_bad_files_then_a_rerun_resumes(ray_env, synthetic, tmp_path):
    expect = folder_with_bad_files(tmp_path / "photos")
    inputs = collect([str(tmp_path / "photos")]).files
    req = ray_request(ray_env, tmp_path, inputs, synthetic)
    log = tmp_path / "ray.log"
    summary = predict.run(req, predict.start_summary(req), log)
    assert summary.worker_exit == 1, predict.log_tail(log)   # some inputs are bad
    assert any("engine ray: 2 actor(s)" in n for n in summary.notes), summary.notes
    by_name = {Path(i["input"]).name: i for i in summary.images}
    assert set(by_name) == set(expect)
    for name, (status, *rest) in expect.items():
        entry = by_name[name]
        assert entry["status"] == status, (name, entry)
        if status == "error":
            assert rest[0] in entry["error"] and "\n" not in entry["error"], (name, entry)
    stamps = {}
    for entry in summary.images:
        if entry["status"] == "ok":
            folder = Path(req.out) / entry["stem"]
            result = json.loads((folder / "result.json").read_text())
            assert {"input.png", "side_by_side.png", "iuv.npz", "dp_contour.png", "bbox.png"} <= {
                p.name for p in folder.iterdir()}
            assert np.load(folder / "iuv.npz")["boxes_xyxy"].shape == (len(result["instances"]), 4)
            stamps[entry["stem"]] = (folder / "result.json").stat().st_mtime_ns
    assert json.loads((Path(req.out) / "summary.json").read_text())["ok"] == len(KEEP_OK)

    # a re-run skips what is complete and redoes a folder whose result.json is missing
    redo = sorted(stamps)[0]
    (Path(req.out) / redo / "result.json").unlink()
    again = predict.run(req, predict.start_summary(req), tmp_path / "ray2.log")
    by_stem = {i["stem"]: i for i in again.images}
    for stem, stamp in stamps.items():
        assert by_stem[stem]["status"] == "ok"
        now = (Path(req.out) / stem / "result.json").stat().st_mtime_ns
        if stem == redo:
            assert now != stamp and not any("skipped" in n for n in by_stem[stem].get("notes", []))
        else:
            assert now == stamp and any("skipped: result.json is complete" in n for n in by_stem[stem]["notes"])
    assert again.ok == summary.ok and again.failed == summary.failed


def test_a_worker_killed_mid_run_costs_a_retry_not_an_output(ray_env, synthetic, tmp_path, monkeypatch):
    hopper = next(s.path for s in samples.resolve(matrix_mod.load().samples, str(ray_env)) if s.name == "grace_hopper")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        (photos / f"copy{i}.jpg").write_bytes(Path(hopper).read_bytes())
    marker = tmp_path / "killed.pid"
    monkeypatch.setenv(KILL_ONCE_ENV, str(marker))   # the first batch's actor SIGKILLs itself after one image
    req = ray_request(ray_env, tmp_path, collect([str(photos)]).files, synthetic, batch_size=2)
    summary = predict.run(req, predict.start_summary(req), tmp_path / "ray.log")
    assert marker.is_file(), "the fault was injected (an actor was killed)"
    assert summary.worker_exit == 0 and summary.ok == 4, (summary.images, predict.log_tail(tmp_path / "ray.log"))
    for i in range(4):
        folder = Path(req.out) / f"copy{i}"
        assert json.loads((folder / "result.json").read_text())["instances"]
        assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")], "no half-written file"


def overlay_order(python: Path, overlay: Path, source: Path, every: int) -> list[int]:
    """For each frame of the overlay video, the kept source frame (0, 1, ...) it looks most like: the
    clip slides 8 px a frame, so frames out of order show as a shuffled list."""
    script = f"""
import av, json, numpy as np
def gray(path, keep):
    with av.open(path) as c:
        return [f.to_ndarray(format="gray").astype(np.int16) for n, f in enumerate(c.decode(c.streams.video[0])) if keep(n)]
src, out = gray({str(source)!r}, lambda n: n % {every} == 0), gray({str(overlay)!r}, lambda n: True)
h, w = min(a.shape[0] for a in src + out), min(a.shape[1] for a in src + out)
print(json.dumps([int(np.argmin([np.abs(o[:h, :w] - s[:h, :w]).mean() for s in src])) for o in out]))
"""
    done = subprocess.run([str(python), "-c", script], check=True, timeout=120, capture_output=True, text=True)
    return json.loads(done.stdout)


def test_videos_through_ray_give_the_local_engines_outputs_in_order_and_a_rerun_skips_them(ray_env, synthetic,
                                                                                           tmp_path):
    """A 2-second clip, every 3rd frame, through two actors: per-frame IUV data and result.json, the
    overlay video at 8/3 fps with its frames in order; a truncated AVI: the frames that decoded and an
    error for the rest. A re-run skips the complete clip and runs the truncated one again."""
    python = ray_env / "bin" / "python"
    photo = next(s.path for s in samples.resolve(matrix_mod.load().samples, str(ray_env)) if s.name == "grace_hopper")
    clip, cut = tmp_path / "clip.mp4", tmp_path / "cut.avi"
    make_video(python, Path(photo), clip, frames=16, fps=8)
    make_video(python, Path(photo), cut, frames=12, fps=8)
    cut.write_bytes(cut.read_bytes()[:len(cut.read_bytes()) * 6 // 10])
    req = ray_request(ray_env, tmp_path, [str(clip), str(cut)], synthetic, every=3, max_detections=1)
    log = tmp_path / "ray.log"
    summary = predict.run(req, predict.start_summary(req), log)
    entries = {Path(i["input"]).name: i for i in summary.images}
    assert entries["clip.mp4"]["status"] == "ok" and entries["clip.mp4"]["frames"] == 6, (entries, predict.log_tail(log))
    assert any("video(s) decoded by Ray tasks" in n for n in summary.notes), summary.notes
    out = Path(req.out)
    result = json.loads((out / "clip" / "result.json").read_text())
    assert [f["frame"] for f in result["frames"]] == [0, 3, 6, 9, 12, 15] and result["errors"] == []
    assert [f["time_s"] for f in result["frames"]] == [0.0, 0.375, 0.75, 1.125, 1.5, 1.875]
    for f in result["frames"]:
        frame = json.loads((out / f["stem"] / "result.json").read_text())
        assert frame["frame"] == f["frame"] and frame["stem"] == f"clip/frame_{f['frame']:06d}"
        assert np.load(out / f["stem"] / "iuv.npz")["boxes_xyxy"].shape == (len(frame["instances"]), 4)
    fps, frames = video_info(python, out / "clip" / "overlay.mp4")
    assert frames == 6 and abs(fps - 8 / 3) < 0.01, (fps, frames)
    assert overlay_order(python, out / "clip" / "overlay.mp4", clip, 3) == [0, 1, 2, 3, 4, 5]
    assert entries["cut.avi"]["status"] == "error" and entries["cut.avi"]["frames"] >= 1, entries["cut.avi"]
    assert "of the 12 frames" in entries["cut.avi"]["error"] or "truncated" in entries["cut.avi"]["error"]
    assert (out / "cut" / "overlay.mp4").is_file() and summary.worker_exit == 1

    stamp = (out / "clip" / "result.json").stat().st_mtime_ns, (out / "clip" / "overlay.mp4").stat().st_mtime_ns
    again = predict.run(req, predict.start_summary(req), tmp_path / "ray2.log")
    entries = {Path(i["input"]).name: i for i in again.images}
    assert entries["clip.mp4"]["status"] == "ok" and entries["clip.mp4"]["frames"] == 6
    assert any("skipped: result.json is complete" in n for n in entries["clip.mp4"]["notes"])
    assert ((out / "clip" / "result.json").stat().st_mtime_ns, (out / "clip" / "overlay.mp4").stat().st_mtime_ns) \
        == stamp
    assert entries["cut.avi"]["status"] == "error" and not any("skipped" in n for n in entries["cut.avi"]["notes"])


# --- the service -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, data: bytes = b"", headers=None, method: str = "POST", timeout: float = 120):
    req = urllib.request.Request(url, data=data if method == "POST" else None, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, json.loads(err.read() or b"{}")


@pytest.fixture(scope="module")
def service_url(ray_env, synthetic, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    port = free_port()
    req = ray_request(ray_env, tmp, [], synthetic)
    opts = service.ServeOptions(port=port, max_batch_size=4, batch_wait_ms=50, max_queue=2, max_body_mb=0.5,
                                token=TOKEN)
    log = open(tmp / "serve.log", "w")
    proc = subprocess.Popen(service.command(req, opts) + ["--num-cpus", "2"], env=service.env(opts), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail("serve_app exited: " + (tmp / "serve.log").read_text()[-2000:])
            if '"event": "serving"' in (tmp / "serve.log").read_text():
                break
            time.sleep(2)
        else:
            pytest.fail("serve_app did not answer in 300 s")
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def photo_bytes(ray_env) -> bytes:
    hopper = next(s.path for s in samples.resolve(matrix_mod.load().samples, str(ray_env)) if s.name == "grace_hopper")
    return Path(hopper).read_bytes()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_service_answers_good_and_bad_images(ray_env, service_url):
    status, _, health = call(service_url + "/healthz", method="GET")
    assert status == 200 and health["weights"] == "synthetic"
    assert call(service_url + "/v1/densepose", photo_bytes(ray_env))[0] == 401   # no token
    status, _, answer = call(service_url + "/v1/densepose?overlay=1&iuv=1", photo_bytes(ray_env), AUTH)
    assert status == 200, answer
    assert answer["persons"] == len(answer["instances"]) >= 1 and answer["weights"] == "synthetic"
    assert any("pipeline check, not a model" in n for n in answer["notes"])
    assert all(len(p["box_xyxy"]) == 4 and 0 <= p["score"] <= 1 for p in answer["instances"])
    assert base64.b64decode(answer["overlay_png_base64"])[:8] == b"\x89PNG\r\n\x1a\n"
    iuv = np.load(io.BytesIO(base64.b64decode(answer["iuv_npz_base64"])))
    assert iuv["boxes_xyxy"].shape == (answer["persons"], 4)
    boundary = "dpdeployboundary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"h.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + photo_bytes(ray_env) + f"\r\n--{boundary}--\r\n".encode()
    status, _, multi = call(service_url + "/v1/densepose", form,
                            {**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200 and multi["persons"] == answer["persons"]
    for body, reason in ((b"", "empty body"), (b"words, not pixels", "not an image")):
        status, _, bad = call(service_url + "/v1/densepose", body, AUTH)
        assert status == 400 and reason in bad["error"] and "\n" not in bad["error"], bad
    status, _, health = call(service_url + "/healthz", method="GET")
    assert status == 200, "the replica is still up after bad input"


def test_service_refuses_oversize_and_overload_without_losing_requests(ray_env, service_url):
    status, _, big = call(service_url + "/v1/densepose", b"\0" * (600 * 1024), AUTH)
    assert status == 413 and "over the limit" in big["error"]
    data = photo_bytes(ray_env)
    with cf.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: call(service_url + "/v1/densepose", data, AUTH), range(8)))
    codes = sorted(a[0] for a in answers)
    assert set(codes) <= {200, 503} and len(answers) == 8, codes   # every request answered
    assert 200 in codes and 503 in codes, codes
    assert all(a[1].get("retry-after") == "1" for a in answers if a[0] == 503)
