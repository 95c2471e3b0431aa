"""DensePose end to end on the sample photos, through the predict worker (what `invoke predict` runs).

With real weights: every sample yields >= 1 person with score >= 0.8 and IUV in range.
Without them: the worker builds the synthetic checkpoint (its detector made to fire) and the
check is the pipeline: a non-empty DensePose result of the right shapes and an overlay that
differs from the input. The outputs follow docs/internals.md, "Predict outputs".
"""
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CHECKS

REPO = Path(__file__).resolve().parent.parent
MIN_SCORE_REAL = 0.8


def sample_photos(matrix: dict) -> dict[str, Path]:
    """name -> file of each sample photo in env/matrix.yml, found in its package and sha256-checked."""
    found = {}
    for name, entry in matrix["samples"].items():
        spec = importlib.util.find_spec(entry.get("module", entry["package"]))
        assert spec is not None, f"sample {name}: package {entry['package']} is not installed in this env"
        path = Path(spec.origin).parent / entry["path"]
        assert path.is_file(), f"sample {name}: {path} is missing from {entry['package']}"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == entry["sha256"], f"sample {name}: {path} sha256 {digest}, matrix says {entry['sha256']}"
        found[name] = path
    return found


def run_worker(images: list[Path], out: Path, model: str, weights: str, device: str) -> subprocess.CompletedProcess:
    """The predict worker as `invoke predict` starts it; ``weights`` "" = synthetic checkpoint."""
    argv = [sys.executable, "-m", "dpdeploy.inenv.predict_worker", "--out", str(out), "--model", model,
            "--device", device, "--vis", "dp_contour,bbox", *(["--weights", weights] if weights else ["--synthetic"]),
            *map(str, images)]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="session")
def predicted(plan, matrix, tmp_path_factory):
    """Run the worker once on all samples; (summary, out dir, samples)."""
    samples = sample_photos(matrix)
    out = Path(os.environ.get("DPDEPLOY_SMOKE_OUT") or tmp_path_factory.mktemp("predict")) / "predict"
    done = run_worker(list(samples.values()), out, os.environ.get("DPDEPLOY_MODEL") or matrix["models"]["default"],
                      os.environ.get("DPDEPLOY_WEIGHTS", ""), plan["device"])
    assert done.returncode == 0, f"predict worker exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return summary, out, samples


def _entries(summary: dict) -> list[dict]:
    return summary["inputs"] if isinstance(summary, dict) and "inputs" in summary else summary


def test_densepose_on_the_sample_photos(densepose_check, predicted, record_property):
    import numpy as np
    from PIL import Image

    words = CHECKS[densepose_check][1]
    print(f"\nDensePose check: {words}")
    record_property("densepose_check", words)
    summary, out, samples = predicted
    assert summary["weights"] == densepose_check, f"the worker ran with {summary['weights']} weights"
    entries = _entries(summary)
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
            assert uv.min() >= 0 and uv.max() <= 1, f"instance {i}: U/V outside 0..1"
        assert any(iuv[f"labels_{i}"].max() > 0 for i in range(len(scores))), "no body part labelled in any instance"
        original = np.asarray(Image.open(folder / "input.png").convert("RGB"))
        overlay = np.asarray(Image.open(folder / "dp_contour.png").convert("RGB"))
        assert overlay.shape == original.shape and (overlay != original).any(), "the overlay equals the input"
