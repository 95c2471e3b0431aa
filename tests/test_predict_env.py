"""The real worker in a real DensePose env: sample photos + a folder of awkward inputs,
synthetic weights, the contract's files and value ranges. Needs a DensePose env (the ``d2_env``
fixture: DPDEPLOY_TEST_D2_ENV, or the session's deployment from DPDEPLOY_TEST_D2_SOURCE); its
configs are the ones the build step installed into it. ~2-4 min on 2 CPU cores."""
import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dpdeploy.build.wheels import ENV_CONFIGS
from dpdeploy.plan import matrix as matrix_mod
from dpdeploy.inference import predict, samples
from dpdeploy.inference.inputs import collect

from . import bad_inputs

pytestmark = [pytest.mark.slow, pytest.mark.detectron2]
VIS = ["dp_contour", "dp_segm", "dp_u", "dp_v", "bbox"]


def env_request(d2_env, tmp_path, inputs, **changes) -> predict.Request:
    return predict.Request(inputs=inputs, out=str(tmp_path / "out"), model="densepose_rcnn_R_50_FPN_s1x",
                           python=str(d2_env / "bin" / "python"), config_dirs=[str(d2_env / ENV_CONFIGS)],
                           synthetic_cache=str(tmp_path / "synthetic.pth"), **{"weights": "synthetic", **changes})


@pytest.mark.parametrize("precision,batch", [("fp32", 0), ("bf16", 3)], ids=["fp32-default-batch", "bf16-batch3"])
def test_worker_on_samples_and_bad_inputs(d2_env, tmp_path, precision, batch):
    """Every mode keeps the output contract: batches mix good and bad inputs, bf16 on this CPU."""
    prefix = str(d2_env)
    if precision == "bf16":
        try:
            predict.check_precision("bf16", "cpu")
        except predict.PredictError as exc:
            pytest.skip(str(exc))
    photos = [str(s.path) for s in samples.resolve(matrix_mod.load().samples, prefix)]
    expect = bad_inputs.make(tmp_path / "bad inputs", huge=True)
    inputs = photos + collect([str(tmp_path / "bad inputs")]).files
    req = env_request(d2_env, tmp_path, inputs, vis=VIS, precision=precision, batch_size=batch)
    summary = predict.run(req, predict.start_summary(req), tmp_path / "worker.log")
    assert summary.worker_exit == 1, predict.log_tail(tmp_path / "worker.log")   # some inputs are bad
    assert summary.precision == precision and summary.batch_size == (batch or 2)
    by_name = {Path(i["input"]).name: i for i in summary.images}
    for name, (status, *rest) in expect.items():
        entry = by_name[name]
        assert entry["status"] == status, (name, entry)
        if status == "error":
            assert rest[0] in entry["error"] and "\n" not in entry["error"], (name, entry)
    for path in photos:
        assert by_name[Path(path).name]["status"] == "ok" and by_name[Path(path).name]["instances"] >= 1
    for entry in summary.images:
        if entry["status"] != "ok":
            continue
        folder = tmp_path / "out" / entry["stem"]
        names = {p.name for p in folder.iterdir()}
        assert {"input.png", "side_by_side.png", "iuv.npz", "result.json", *(f"{v}.png" for v in VIS)} <= names
        result = json.loads((folder / "result.json").read_text())
        iuv = np.load(folder / "iuv.npz")
        n = len(result["instances"])
        assert iuv["boxes_xyxy"].shape == (n, 4) and iuv["scores"].shape == (n,)
        for i in range(n):
            labels, uv = iuv[f"labels_{i}"], iuv[f"uv_{i}"]
            assert labels.min() >= 0 and labels.max() <= 24
            assert uv.shape == (2, *labels.shape) and uv.min() >= 0.0 and uv.max() <= 1.0
    hopper = tmp_path / "out" / "grace_hopper"
    from PIL import Image
    overlay = np.asarray(Image.open(hopper / "dp_segm.png"))
    gray = np.asarray(Image.open(hopper / "input.png").convert("L"))
    assert overlay.shape[:2] == gray.shape
    assert (np.abs(overlay.astype(int) - gray[:, :, None]).max(axis=2) > 30).sum() > 100, "charts were drawn"
    assert "resized from 8000x6000" in " ".join(by_name["huge.jpg"]["notes"])
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["ok"] == summary.ok and on_disk["weights_kind"] == "synthetic"


def make_video(python: Path, photo: Path, path: Path, frames: int, fps: int, codec: str = "mpeg4") -> None:
    """A clip of a sample photo sliding sideways, written with the env's PyAV (the tools venv has none)."""
    script = f"""
import av, numpy as np
from PIL import Image
im = np.asarray(Image.open({str(photo)!r}).convert("RGB").resize((240, 180)))
out = av.open({str(path)!r}, "w")
stream = out.add_stream({codec!r}, rate={fps})
stream.width, stream.height, stream.pix_fmt = 240, 180, "yuv420p"
for n in range({frames}):
    for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(np.roll(im, 8 * n, axis=1)),
                                                           format="rgb24")):
        out.mux(packet)
for packet in stream.encode():
    out.mux(packet)
out.close()
"""
    subprocess.run([str(python), "-c", script], check=True, timeout=120)


def video_info(python: Path, path: Path) -> tuple[float, int]:
    script = f"import av; c = av.open({str(path)!r}); s = c.streams.video[0]; " \
             "print(float(s.average_rate), sum(1 for _ in c.decode(s)))"
    out = subprocess.run([str(python), "-c", script], check=True, timeout=120, capture_output=True, text=True)
    fps, frames = out.stdout.split()
    return float(fps), int(frames)


def test_video_yields_an_overlay_video_and_per_frame_data_in_order(d2_env, tmp_path):
    """A 2-second clip, every 3rd frame; a truncated AVI (its header lists more frames than are left)
    yields the frames that decoded and an error for the rest; a broken file, a clear error."""
    python, photo = d2_env / "bin" / "python", samples.resolve(matrix_mod.load().samples, str(d2_env))[0].path
    clip, cut, broken = tmp_path / "clip.mp4", tmp_path / "cut.avi", tmp_path / "broken.mp4"
    make_video(python, photo, clip, frames=16, fps=8)
    make_video(python, photo, cut, frames=12, fps=8)
    data = cut.read_bytes()
    cut.write_bytes(data[:len(data) * 6 // 10])
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    req = env_request(d2_env, tmp_path, [str(clip), str(cut), str(broken)], every=3, max_detections=1)
    summary = predict.run(req, predict.start_summary(req), tmp_path / "worker.log")
    log = predict.log_tail(tmp_path / "worker.log")
    entries = {Path(i["input"]).name: i for i in summary.images}
    assert entries["clip.mp4"]["status"] == "ok" and entries["clip.mp4"]["frames"] == 6, (entries, log)
    folder = tmp_path / "out" / "clip"
    result = json.loads((folder / "result.json").read_text())
    assert [f["frame"] for f in result["frames"]] == [0, 3, 6, 9, 12, 15]
    assert [f["time_s"] for f in result["frames"]] == sorted(f["time_s"] for f in result["frames"])
    for f in result["frames"]:
        frame = json.loads((tmp_path / "out" / f["stem"] / "result.json").read_text())
        assert frame["frame"] == f["frame"] and (tmp_path / "out" / f["stem"] / "iuv.npz").is_file()
    fps, frames = video_info(python, folder / "overlay.mp4")
    assert frames == 6 and abs(fps - 8 / 3) < 0.01, (fps, frames)
    assert entries["cut.avi"]["status"] == "error" and entries["cut.avi"]["frames"] >= 1, entries["cut.avi"]
    assert "of the 12 frames" in entries["cut.avi"]["error"] or "truncated" in entries["cut.avi"]["error"]
    assert (tmp_path / "out" / "cut" / "overlay.mp4").is_file()
    assert entries["broken.mp4"]["status"] == "error" and "cannot open the video" in entries["broken.mp4"]["error"]
    assert "\n" not in entries["broken.mp4"]["error"]


def test_synthetic_module_cli_writes_a_checkpoint(d2_env, tmp_path):
    prefix = str(d2_env)
    config = d2_env / ENV_CONFIGS / "densepose_rcnn_R_50_FPN_s1x.yaml"
    out = tmp_path / "s.pth"
    proc = subprocess.run([str(Path(prefix) / "bin" / "python"), "-m", "dpdeploy.inenv.synthetic", "--config",
                           str(config), "--out", str(out)], env=predict.worker_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.stat().st_size > 10_000_000 and not list(tmp_path.glob(".synthetic-*"))


def test_a_checkpoint_that_does_not_fit_the_model_is_refused_before_loading(d2_env, tmp_path):
    """detectron2's checkpointer skips a tensor it cannot load (a warning) and runs a partly random
    model; the worker refuses first: a .pkl that only looks like DensePose (the prefixes), and the
    synthetic checkpoint with one tensor of another shape."""
    import pickle

    photo = str(samples.resolve(matrix_mod.load().samples, str(d2_env))[0].path)
    looks = tmp_path / "looks_like_densepose.pkl"
    looks.write_bytes(pickle.dumps({"model": {p + "w": np.zeros(3, np.float32) for p in
                                              ("backbone.", "roi_heads.densepose_head.", "roi_heads.densepose_predictor.")}}))
    config = d2_env / ENV_CONFIGS / "densepose_rcnn_R_50_FPN_s1x.yaml"
    python = str(d2_env / "bin" / "python")
    reshaped = tmp_path / "reshaped.pth"
    subprocess.run([python, "-m", "dpdeploy.inenv.synthetic", "--config", str(config), "--out", str(reshaped)],
                   env=predict.worker_env(), check=True, capture_output=True, timeout=600)
    subprocess.run([python, "-c", "import sys, torch; d = torch.load(sys.argv[1], weights_only=True); "
                    "d['model']['roi_heads.box_predictor.cls_score.weight'] = torch.zeros(7, 1024); torch.save(d, sys.argv[1])",
                    str(reshaped)], check=True, timeout=300)
    for weights, why in ((looks, "parameters missing (backbone.bottom_up"),
                         (reshaped, "roi_heads.box_predictor.cls_score.weight (7, 1024) where the model has (2, 1024)")):
        req = env_request(d2_env, tmp_path / weights.stem, [photo], weights=str(weights), max_detections=3)
        summary = predict.run(req, predict.start_summary(req), tmp_path / f"{weights.stem}.log")
        assert summary.worker_exit == 3, predict.log_tail(tmp_path / f"{weights.stem}.log")
        [entry] = summary.images
        assert entry["status"] == "error" and "does not fit the model" in entry["error"] and why in entry["error"], entry


def _env_gpus(d2_env: Path) -> int:
    out = subprocess.run([str(d2_env / "bin" / "python"), "-c", "import torch; print(torch.cuda.device_count())"],
                         capture_output=True, text=True, timeout=300)
    return int(out.stdout.strip() or 0) if out.returncode == 0 else 0


@pytest.mark.gpu
def test_fp16_on_every_gpu_keeps_the_contract(d2_env, tmp_path):
    """fp16, the default batch, one worker per GPU the env's torch sees (one GPU: one worker)."""
    gpus = _env_gpus(d2_env)
    if not gpus:
        pytest.skip("the env's torch sees no CUDA GPU")
    photos = [str(s.path) for s in samples.resolve(matrix_mod.load().samples, str(d2_env))] * 2
    req = env_request(d2_env, tmp_path, photos, stems=["a", "b", "c", "d"], device="cuda", precision="fp16",
                      devices=predict.parse_gpus("", "cuda", gpus))
    summary = predict.run(req, predict.start_summary(req), tmp_path / "worker.log")
    assert summary.success, predict.log_tail(tmp_path / "worker.log")
    assert summary.precision == "fp16" and len(summary.workers) == min(gpus, 4)
    for stem in "abcd":
        iuv = np.load(tmp_path / "out" / stem / "iuv.npz")
        assert iuv["boxes_xyxy"].shape[0] == len(json.loads((tmp_path / "out" / stem / "result.json").read_text())
                                                 ["instances"])


def test_fast_fp32_agrees_with_defaultpredictors_model(d2_env, tmp_path):
    """The default fp32 model (batch norms folded, channels-last) against the
    worker's --exact model (as DefaultPredictor builds it) on the sample photos: same boxes and
    part labels, as docs/performance.md states (box IoU >= 0.99, >= 99.5% labels equal)."""
    photos = [str(s.path) for s in samples.resolve(matrix_mod.load().samples, str(d2_env))]
    fast = env_request(d2_env, tmp_path, photos, vis=["bbox"], max_detections=3)
    assert predict.run(fast, predict.start_summary(fast), tmp_path / "fast.log").success
    exact = dataclasses.replace(fast, out=str(tmp_path / "exact"))
    cmd = predict.worker_command(exact)
    done = subprocess.run(cmd[:cmd.index("--")] + ["--exact"] + cmd[cmd.index("--"):], capture_output=True, text=True,
                          env=predict.worker_env(), timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    for stem in fast.stems:
        a, b = (np.load(Path(r.out) / stem / "iuv.npz") for r in (fast, exact))
        assert a["boxes_xyxy"].shape == b["boxes_xyxy"].shape and len(a["scores"]) >= 1, stem
        assert np.abs(a["boxes_xyxy"] - b["boxes_xyxy"]).max() < 1.0, stem
        for i in range(len(a["scores"])):
            same = (a[f"labels_{i}"] == b[f"labels_{i}"]).mean() if a[f"labels_{i}"].shape == b[f"labels_{i}"].shape else 0
            assert same >= 0.995, (stem, i, same)


WINDOW_CHECK = r"""
import copy, dataclasses, json, sys, torch
from densepose import add_densepose_config
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from dpdeploy.inenv import decoder_window

cfg = get_cfg()
add_densepose_config(cfg)
cfg.merge_from_file(sys.argv[1])
cfg.MODEL.DEVICE = "cpu"
torch.manual_seed(0)
heads = build_model(cfg).eval().roi_heads
windowed = copy.deepcopy(heads)
installed = decoder_window.install(windowed)
sizes = []
windowed.decoder.predictor.register_forward_hook(lambda m, i, o: sizes.append(list(o.shape[-2:])))
h, w = 800, 1088   # a batch padded to multiples of 32
features = {f"p{k}": torch.randn(2, 256, h // 2**k, w // 2**k) for k in range(2, 7)}
boxes = [[[10, 12, 90, 200], [60, 150, 160, 260], [900, 700, 1087, 799]], [[400.5, 300.25, 480.75, 420.5]]]

def instances(k):
    found = Instances((h, w), pred_boxes=Boxes(torch.tensor(boxes[k])))
    found.pred_classes = torch.zeros(len(boxes[k]), dtype=torch.long)
    return found

with torch.inference_mode():
    whole = heads._forward_densepose(features, [instances(0), instances(1)])
    parts = windowed._forward_densepose(features, [instances(0), instances(1)])
diff, size = 0.0, 0.0
for a, b in zip(whole, parts):
    for f in dataclasses.fields(a.pred_densepose):
        x, y = getattr(a.pred_densepose, f.name), getattr(b.pred_densepose, f.name)
        if isinstance(x, torch.Tensor):
            diff, size = max(diff, (x - y).abs().max().item()), max(size, x.abs().max().item())
print(json.dumps({"installed": installed, "reach": decoder_window.reach(heads.decoder), "sizes": sizes,
                  "diff": diff, "size": size}))
"""


def test_decoder_windows_give_the_whole_decoders_densepose_outputs(d2_env):
    """DensePose's heads decoding only windows around the boxes (overlapping boxes, one at the
    map's edge, two images) give the same DensePose outputs as the whole decoder, on windows
    smaller than the map."""
    config = d2_env / ENV_CONFIGS / "densepose_rcnn_R_50_FPN_s1x.yaml"
    done = subprocess.run([str(d2_env / "bin" / "python"), "-c", WINDOW_CHECK, str(config)], capture_output=True,
                          text=True, env=predict.worker_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["installed"] and got["reach"] == 21, got
    assert len(got["sizes"]) == 3 and all(hw[0] * hw[1] < 200 * 272 / 2 for hw in got["sizes"]), got
    assert got["size"] > 0 and got["diff"] <= 1e-5 * got["size"], got
