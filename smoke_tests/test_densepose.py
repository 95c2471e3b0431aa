"""DensePose end to end on the sample photos, through the predict worker (what `invoke predict` runs).

With real weights: every sample yields >= 1 person with score >= 0.8 and IUV in range.
Without them: the worker builds the synthetic checkpoint (its detector made to fire) and the
check is the pipeline: a non-empty DensePose result of the right shapes (I in 0..24, U/V
finite; their range is only meaningful for a trained head) and an overlay that differs from
the input. The outputs follow docs/internals.md, "Predict outputs".
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CHECKS
from dpdeploy.inference import predict
from dpdeploy.inenv.synthetic import cache_name
from dpdeploy.inference.samples import resolve as resolve_samples

MIN_SCORE_REAL = 0.8


@pytest.fixture(scope="session")
def predicted(plan, matrix, tmp_path_factory):
    """Run the worker once on all samples, exactly as `invoke predict` starts it; (events, out, samples)."""
    samples = resolve_samples(matrix["samples"], sys.prefix)  # sha256-checked
    home = Path(os.environ.get("DPDEPLOY_HOME") or plan["home"])
    model = os.environ.get("DPDEPLOY_MODEL") or matrix["models"]["default"]
    out = Path(os.environ.get("DPDEPLOY_SMOKE_OUT") or tmp_path_factory.mktemp("smoke")) / "predict"
    req = predict.Request(
        inputs=[str(s.path) for s in samples], out=str(out), model=model, python=sys.executable,
        weights=os.environ.get("DPDEPLOY_WEIGHTS") or predict.SYNTHETIC, vis=["dp_contour", "bbox"],
        device=plan["device"], config_dirs=predict.config_dirs(home, sys.prefix),
        synthetic_cache=str(home / "cache" / "weights" / cache_name(model)))
    done = subprocess.run(predict.worker_command(req), env=predict.worker_env(), capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, f"predict worker exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    events = [e for e in map(predict.parse_event, done.stdout.splitlines()) if e]
    return events, out, samples


def test_densepose_on_the_sample_photos(densepose_check, predicted):
    import numpy as np
    from PIL import Image

    words = CHECKS[densepose_check][1]
    print(f"\nDensePose check: {words}")
    events, out, samples = predicted
    ready = next(e for e in events if e["event"] == "ready")
    assert ready["weights_kind"] == densepose_check, f"the worker ran with {ready['weights_kind']} weights"
    print(f"model loaded in {ready['load_s']} s: {ready['config']}; " + "; ".join(ready["notes"]))
    entries = [e for e in events if e["event"] == "image"]
    assert len(entries) == len(samples), f"{len(samples)} samples in, {len(entries)} results out"
    for entry in entries:
        assert entry["status"] == "ok", f"{entry.get('input')}: {entry.get('error')}"
        folder = out / entry["stem"]
        iuv = np.load(folder / "iuv.npz")
        boxes, scores = iuv["boxes_xyxy"], iuv["scores"]
        assert len(scores) >= 1, f"{entry['input']}: no person detected"
        assert boxes.shape == (len(scores), 4)
        if densepose_check == "real":
            assert scores.max() >= MIN_SCORE_REAL, f"{entry['input']}: best score {scores.max():.2f} < {MIN_SCORE_REAL}"
        for i in range(len(scores)):
            labels, uv = iuv[f"labels_{i}"], iuv[f"uv_{i}"]
            assert labels.ndim == 2 and uv.shape == (2, *labels.shape), f"instance {i}: I {labels.shape}, UV {uv.shape}"
            assert labels.min() >= 0 and labels.max() <= 24, f"instance {i}: I outside 0..24"
            if densepose_check == "real":  # random U/V heads regress anything (seen: -3800..1400)
                assert uv.min() >= 0 and uv.max() <= 1, f"instance {i}: U/V outside 0..1"
            assert np.isfinite(uv).all(), f"instance {i}: U/V not finite"
        assert any(iuv[f"labels_{i}"].max() > 0 for i in range(len(scores))), "no body part labelled in any instance"
        original = np.asarray(Image.open(folder / "input.png").convert("RGB"))
        overlay = np.asarray(Image.open(folder / "dp_contour.png").convert("RGB"))
        assert overlay.shape == original.shape and (overlay != original).any(), "the overlay equals the input"
