"""The real worker in a real DensePose env: sample photos + a folder of awkward inputs,
synthetic weights, the contract's files and value ranges. Needs a DensePose env (the ``d2_env``
fixture: DPDEPLOY_TEST_D2_ENV, or the session's deployment from DPDEPLOY_TEST_D2_SOURCE); its
configs are the ones the build step installed into it. ~2-4 min on 2 CPU cores."""
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


def test_worker_on_samples_and_bad_inputs(d2_env, tmp_path):
    prefix = str(d2_env)
    photos = [str(s.path) for s in samples.resolve(matrix_mod.load().samples, prefix)]
    expect = bad_inputs.make(tmp_path / "bad inputs", huge=True)
    inputs = photos + collect([str(tmp_path / "bad inputs")]).files
    req = predict.Request(inputs=inputs, out=str(tmp_path / "out"), model="densepose_rcnn_R_50_FPN_s1x",
                          python=str(Path(prefix) / "bin" / "python"), weights="synthetic", vis=VIS,
                          config_dirs=[str(d2_env / ENV_CONFIGS)],
                          synthetic_cache=str(tmp_path / "synthetic.pth"))
    summary = predict.run(req, predict.start_summary(req), tmp_path / "worker.log")
    assert summary.worker_exit == 1, predict.log_tail(tmp_path / "worker.log")   # some inputs are bad
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


def test_synthetic_module_cli_writes_a_checkpoint(d2_env, tmp_path):
    prefix = str(d2_env)
    config = d2_env / ENV_CONFIGS / "densepose_rcnn_R_50_FPN_s1x.yaml"
    out = tmp_path / "s.pth"
    proc = subprocess.run([str(Path(prefix) / "bin" / "python"), "-m", "dpdeploy.inenv.synthetic", "--config",
                           str(config), "--out", str(out)], env=predict.worker_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.stat().st_size > 10_000_000 and not list(tmp_path.glob(".synthetic-*"))
