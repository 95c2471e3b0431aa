"""DensePose end to end, as a user runs it: setup (the session's real deployment), a second setup
that only confirms, predict over a folder of awkward inputs with --out, the report as a PDF read
back as a reader would, verify --junit and doctor. Runs in CI from the shared detectron2 source."""
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from dpdeploy.inference import samples
from dpdeploy.plan import matrix as matrix_mod
from dpdeploy.records import predict_summary

from . import bad_inputs
from .conftest import D2_SOURCE, invoke

pytestmark = [pytest.mark.slow, pytest.mark.detectron2]
NESTED = ("trip/day 1/img.jpg", "trip/day 2/img.jpg")   # same file name, two folders: must not collide


def test_setup_predict_report_verify_doctor(deployment, tmp_path):
    home = deployment.home
    print(f"\nfirst setup: {deployment.setup_seconds:.1f} s")

    again = invoke("setup", "--source", D2_SOURCE, "--json", home=home)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-2000:]
    steps = {s["name"]: s for s in json.loads(again.stdout)["steps"]}
    assert {n: steps[n]["status"] for n in ("env", "build", "smoke")} == \
        {"env": "up-to-date", "build": "up-to-date", "smoke": "up-to-date"}, steps
    print("second setup steps: " + ", ".join(f"{n} {s['duration_s']:.1f} s" for n, s in steps.items()))

    photos = tmp_path / "photos"
    expect = bad_inputs.make(photos / "awkward", huge=True)
    sample = samples.resolve(matrix_mod.load().samples, deployment.prefix)[0].path
    for rel in NESTED:
        (photos / rel).parent.mkdir(parents=True)
        shutil.copy(sample, photos / rel)
    (photos / "notes.txt").write_text("not a photo")
    out = tmp_path / "mine"
    done = invoke("predict", str(photos), "--out", str(out), "--weights", "synthetic", "--json", home=home)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]   # some inputs are bad
    summary = predict_summary.read(out)
    by_stem = {i["stem"]: i for i in summary.images}
    for rel in NESTED:
        stem = rel.replace(" ", "_").removesuffix(".jpg")
        assert by_stem[stem]["status"] == "ok", by_stem.get(stem)
        assert (out / stem / "result.json").is_file() and (out / stem / "dp_contour.png").is_file()
    for name, (status, *_) in expect.items():
        entry = next(i for i in summary.images if i["input"].endswith("/" + name))
        assert entry["status"] == status, (name, entry)
    assert any(s.endswith("notes.txt: not an image file name (.txt)") for s in summary.skipped)

    report_dir = tmp_path / "report"
    made = invoke("report", "--format", "pdf", "--out", str(report_dir), home=home)
    assert made.returncode == 0, made.stdout + made.stderr
    text = pdf_text(report_dir / "report.pdf")
    assert "trip/day_1/img" in text and "trip/day_2/img" in text, "the processed photos are in the PDF"
    assert "not recorded" not in text and "\x1b" not in text and "[31m" not in text and "[0m" not in text
    assert "none (CPU build)" in text and "synthetic" in text.lower()
    images = subprocess.run(["pdfimages", "-list", str(report_dir / "report.pdf")], capture_output=True,
                            text=True, check=True).stdout.splitlines()[2:]
    assert len(images) >= 2 * len(NESTED), images

    junit = tmp_path / "verify.xml"
    checked = invoke("verify", "--junit", str(junit), home=home)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert ET.parse(junit).getroot().get("failures") == "0"
    doctor = invoke("doctor", home=home)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "compiled archs: none (CPU build)" in doctor.stdout


def pdf_text(pdf) -> str:
    if not shutil.which("pdftotext"):
        pytest.fail("pdftotext missing: apt install poppler-utils (.ci/run installs it)")
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
