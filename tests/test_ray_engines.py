"""The Ray engines without Ray: refusals before anything loads (exit 2, one line), the commands the
parent runs, and the in-env helpers that need no Ray (resume check, multipart, body decoding)."""
import json
import os
import subprocess
import sys
from fractions import Fraction

import pytest

from dpdeploy.inenv import images, ray_batch, serve_app
from dpdeploy.inference import predict, serve as service

from .conftest import ROOT


def request(tmp_path, **changes) -> predict.Request:
    return predict.Request(inputs=["/p/a.jpg", "/p/b.jpg"], out=str(tmp_path / "out"), model="m",
                           python="/env/bin/python", weights="synthetic", synthetic_cache=str(tmp_path / "s.pth"),
                           **changes)


def test_ray_engine_runs_ray_batch_once_for_every_input(tmp_path):
    req = request(tmp_path, engine="ray", address="10.0.0.5:6379", workers=2, devices=["cuda:0", "cuda:1"])
    assert predict.shards(req) == [(req.device, [0, 1])]
    cmd = predict.worker_command(req)
    assert cmd[:3] == ["/env/bin/python", "-m", "dpdeploy.inenv.ray_batch"]
    own, rest = ray_batch.split_args(cmd[3:])
    assert own.address == "10.0.0.5:6379" and own.workers == 2
    assert rest == predict.worker_command(request(tmp_path))[3:], "the rest is exactly the worker's arguments"
    assert predict.worker_command(request(tmp_path))[2] == "dpdeploy.inenv.predict_worker"


@pytest.mark.parametrize("engine,address,gpus,workers,text", [
    ("spark", "", "", 0, "--engine spark: choose from local, ray"),
    ("local", "auto", "", 0, "--address: needs --engine ray"),
    ("ray", "", "0,1", 0, "Ray places one actor per GPU itself"),
    ("ray", "not an address", "", 0, "use auto or HOST:PORT"),
    ("ray", "", "", -1, "--workers -1"),
])
def test_engine_refusals(engine, address, gpus, workers, text):
    with pytest.raises(predict.PredictError, match=text.replace("(", r"\(")):
        predict.check_engine(engine, address, gpus, workers)


def test_engine_accepts_auto_and_host_port():
    for address in ("", "auto", "10.0.0.5:6379", "ray://head:10001", "head.example:6379"):
        predict.check_engine("ray", address, "", 2)


def test_env_without_ray_is_refused(tmp_path):
    with pytest.raises(predict.PredictError, match="has no Ray.*--profile cpu-ray"):
        predict.check_env_has_ray(str(tmp_path))
    (tmp_path / "lib/python3.11/site-packages/ray").mkdir(parents=True)
    (tmp_path / "lib/python3.11/site-packages/ray/__init__.py").write_text("")
    predict.check_env_has_ray(str(tmp_path))


def test_complete_means_a_result_json_with_instances(tmp_path):
    assert ray_batch.complete(tmp_path) is None
    (tmp_path / "result.json").write_text("{\"instances\": [")   # torn: never complete
    assert ray_batch.complete(tmp_path) is None
    (tmp_path / "result.json").write_text(json.dumps({"input": "a.jpg"}))   # not a finished image's result
    assert ray_batch.complete(tmp_path) is None
    (tmp_path / "result.json").write_text(json.dumps({"instances": [{"score": 0.9}], "notes": []}))
    assert ray_batch.complete(tmp_path)["instances"] == [{"score": 0.9}]


@pytest.mark.parametrize("opts,text", [
    (dict(host="0.0.0.0"), "needs a token"),
    (dict(host="10.1.2.3", token="short"), "at least 16 characters"),
    (dict(port=70000), "--port 70000"),
    (dict(replicas=0), "must be 1 or more"),
    (dict(max_body_mb=0), "must be above 0"),
])
def test_serve_refusals(opts, text):
    with pytest.raises(predict.PredictError, match=text):
        service.check(service.ServeOptions(**opts))


def test_serve_binds_loopback_by_default_and_keeps_the_token_out_of_argv(tmp_path):
    opts = service.ServeOptions(token="a-secret-of-enough-length")
    service.check(opts)
    service.check(service.ServeOptions(host="0.0.0.0", token="a-secret-of-enough-length"))
    cmd = service.command(request(tmp_path), opts)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and "a-secret-of-enough-length" not in cmd
    assert service.env(opts, {})[serve_app.TOKEN_ENV] == "a-secret-of-enough-length"
    assert serve_app.TOKEN_ENV not in service.env(service.ServeOptions(), {serve_app.TOKEN_ENV: "inherited"})
    own, rest = serve_app.split_args(cmd[3:])
    assert own.host == "127.0.0.1" and own.max_batch_size == 8 and "--model" in rest


def test_multipart_image_part_and_plain_body():
    body = (b"--xx\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
            b"--xx\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n\x89PNGdata\r\n--xx--\r\n")
    assert serve_app.image_bytes("multipart/form-data; boundary=xx", body) == b"\x89PNGdata"
    assert serve_app.image_bytes("image/jpeg", b"raw") == b"raw"
    no_image = b"--xx\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--xx--\r\n"
    with pytest.raises(serve_app.BadRequest, match="without an 'image' field"):
        serve_app.image_bytes("multipart/form-data; boundary=xx", no_image)


def test_load_bytes_gives_the_cli_reasons(tmp_path):
    with pytest.raises(images.ImageError, match="empty body"):
        images.load_bytes(b"")
    with pytest.raises(images.ImageError, match="not an image"):
        images.load_bytes(b"these are words")
    from PIL import Image
    import io
    buf = io.BytesIO()
    Image.new("RGB", (20, 10), (200, 10, 10)).save(buf, "PNG")
    assert images.load_bytes(buf.getvalue()).rgb.shape == (10, 20, 3)


def _refused(args, home, text):
    full = {**os.environ, "DPDEPLOY_HOME": str(home), "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True, env=full,
                          timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert text in proc.stderr, proc.stderr


@pytest.fixture
def no_ray_env(tmp_path):
    python = tmp_path / "env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\nexit 99\n")
    python.chmod(0o755)
    (tmp_path / "a.jpg").write_bytes(b"x")
    return str(tmp_path / "env")


def test_cli_refuses_ray_on_an_env_without_it(tmp_path, no_ray_env):
    _refused(["predict", str(tmp_path / "a.jpg"), "--prefix", no_ray_env, "--device", "cpu", "--weights", "synthetic",
              "--engine", "ray"], tmp_path / "home", "has no Ray")
    _refused(["serve", "--prefix", no_ray_env, "--device", "cpu", "--weights", "synthetic"], tmp_path / "home",
             "has no Ray")
    assert not (tmp_path / "home" / "runs").exists() or not any((tmp_path / "home" / "runs").iterdir())


def test_cli_refuses_serving_beyond_loopback_without_a_token(tmp_path, no_ray_env):
    _refused(["serve", "--host", "0.0.0.0", "--prefix", no_ray_env, "--device", "cpu"], tmp_path / "home",
             "needs a token")


# --- videos through Ray: the driver's reassembly (no Ray, no av) ------------------------------------

def test_in_order_hands_frames_on_in_frame_order_whatever_order_they_come_in():
    order = ray_batch.InOrder(every=3)
    assert order.add(6, "f6") == [] and order.add(3, "f3") == []
    assert order.add(0, "f0") == [(0, "f0"), (3, "f3"), (6, "f6")]
    assert order.add(3, "again") == [] and order.add(4, "not kept") == [], "a retried batch's repeat, a stray"
    assert not order.complete
    order.close(11)   # the decoder read frames 0..10: 9 is the last kept one
    assert not order.complete and order.missing() == [9]
    assert order.add(12, "beyond the end") == []
    assert order.add(9, "f9") == [(9, "f9")] and order.complete
    empty = ray_batch.InOrder(every=1)
    empty.close(0)   # a video that could not be opened: done at once, no frame
    assert empty.complete and empty.missing() == []


def test_in_order_after_a_lost_frame_gives_the_rest_in_order():
    order = ray_batch.InOrder(every=1)
    order.add(2, "f2"), order.add(1, "f1")
    assert order.missing() == [0] and order.rest() == [(1, "f1"), (2, "f2")]


def test_video_complete_means_every_frame_and_the_overlay_without_an_error(tmp_path):
    assert ray_batch.video_complete(tmp_path) is None
    summary = {"format": "video", "frames": [{"frame": 0, "instances": 1}], "errors": [], "overlay": "overlay.mp4"}
    (tmp_path / "result.json").write_text(json.dumps(summary))
    assert ray_batch.video_complete(tmp_path) is None, "no overlay.mp4 on disk"
    (tmp_path / "overlay.mp4").write_bytes(b"x")
    assert ray_batch.video_complete(tmp_path)["frames"] == summary["frames"]
    for broken in ({"errors": ["truncated"]}, {"frames": []}, {"overlay": None}, {"format": "png"}):
        (tmp_path / "result.json").write_text(json.dumps({**summary, **broken}))
        assert ray_batch.video_complete(tmp_path) is None, broken
    assert ray_batch.complete(tmp_path) is None, "a video's result.json is not an image's"


class FakeOverlay:
    """video.OverlayWriter without PyAV: records what it is given."""
    made: list = []

    def __init__(self, path, fps):
        self.path, self.fps, self.frames = path, fps, []
        FakeOverlay.made.append(self)

    def add(self, rgb):
        self.frames.append(int(rgb[0, 0, 0]))

    def close(self):
        return bool(self.frames)


def frame_record(number, fps="8"):
    import numpy as np

    overlay = np.full((4, 6, 3), number, np.uint8)
    result = {"frame": number, "time_s": float(number / Fraction(fps)), "instances": [{"score": 0.9}],
              "stem": f"clip/frame_{number:06d}"}
    return {"result": result, "shape": list(overlay.shape), "fps": fps}, overlay.tobytes()


def test_videos_reassemble_out_of_order_frames_with_the_local_engines_writer(tmp_path, monkeypatch, capsys):
    from dpdeploy.inenv import predict_worker, video

    monkeypatch.setattr(video, "OverlayWriter", FakeOverlay)
    FakeOverlay.made = []
    args = predict_worker.parse_args(["--out", str(tmp_path), "--model", "m", "--weights", "w", "--every", "3",
                                      "--", "/v/clip.mp4", "/v/cut.avi"])
    videos = ray_batch.Videos(args)
    videos.add(1, "/v/clip.mp4", "clip")
    videos.add(2, "/v/cut.avi", "cut")
    for number in (6, 0, 9):
        videos.take("frame", 1, number, *frame_record(number))
    videos.take("frame", 1, 3, {"error": "RuntimeError: boom"}, b"")
    videos.take("end", 1, 12, {"fps": "8", "frames": 12, "read": 12, "error": ""}, b"")
    assert videos.clips.keys() == {2}, "clip is done once its end row and every kept frame came"
    videos.take("frame", 2, 0, *frame_record(0))
    videos.take("end", 2, 5, {"fps": "8", "frames": 12, "read": 5, "error": "the video ends after 5 of the 12"}, b"")
    videos.finish()   # cut.avi still waits for frame 3: it never comes
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["stem"], e["status"]) for e in events] == [("clip", "error"), ("cut", "error")]
    clip = json.loads((tmp_path / "clip" / "result.json").read_text())
    assert [f["frame"] for f in clip["frames"]] == [0, 6, 9] and clip["every"] == 3 and clip["fps"] == 8.0
    assert clip["errors"] == ["frame 3: RuntimeError: boom"] and events[0]["frames"] == 3
    assert [(w.path.parent.name, w.fps, w.frames) for w in FakeOverlay.made] == [
        ("clip", Fraction(8, 3), [0, 6, 9]), ("cut", Fraction(8, 3), [0])], "overlay frames in order, at the source fps / every"
    cut = json.loads((tmp_path / "cut" / "result.json").read_text())
    assert cut["errors"][0] == "the video ends after 5 of the 12"
    assert "engine ray: 1 frame(s) never came back (frame 3 first)" in cut["errors"]
    assert videos.failed == 2
