"""The deployment report built from the recorded-run fixture (tests/fixtures/runs/)."""
import json
import re
import shutil
import subprocess
import zipfile

import pytest
from PIL import Image, ImageStat

from dpdeploy.report import write

from .conftest import FIXTURES

RUNS = FIXTURES / "runs"
SETUP, PREDICT = RUNS / "20260610-091500-setup", RUNS / "20260610-093000-predict"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return write(SETUP, PREDICT, out), out


def _non_blank(img: Image.Image) -> bool:
    return max(ImageStat.Stat(img.convert("L")).stddev) > 5


def test_html_is_self_contained_with_every_image(report):
    result, out = report
    page = (out / "report.html").read_text()
    uris = re.findall(r'<img src="(data:image/(?:png|jpeg);base64,[A-Za-z0-9+/=]+)"', page)
    assert len(uris) == 5 + 1, "original, dp_contour, dp_segm, dp_u, dp_v and the terminal"
    assert not re.search(r'src="(?!data:)', page), "no image may point at a file"
    for caption in ("original", "dp_contour", "dp_segm", "dp_u", "dp_v"):
        assert caption in page
    assert result.status == "OK" and "OK" in page


def test_markdown_sections_and_procedure_from_the_record(report):
    _, out = report
    md = (out / "report.md").read_text()
    heads = re.findall(r"^## (.*)$", md, re.M)
    assert heads == ["1. Procedure", "2. Environment", "3. Photos", "4. Terminal", "5. Timings and smoke tests"]
    steps = json.loads((SETUP / "steps.json").read_text())
    for s in steps:
        assert f"`{s['command']}`" in md and f"{s['duration_s']:.1f} s" in md
    assert "| detectron2 commit | 02b5c4e295e990042a714712c21dc79b731e8833 |" in md
    assert "NOT a real DensePose estimate" in md, "fixture weights must be flagged"
    assert "3 tests, 0 failed" in md
    for rel in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (out / rel).is_file()


def test_terminal_screenshot_shows_the_command(report):
    _, out = report
    svg = (out / "terminal.svg").read_text()
    assert "invoke setup" in svg and "==&gt; build" in svg
    command = (SETUP / "command.txt").read_text().strip()
    assert re.search(r"<tspan[^>]*>\$ </tspan><tspan[^>]*>" + re.escape(command) + "<", svg)
    png = Image.open(out / "terminal.png")
    assert _non_blank(png)
    widest = max(len(line) for line in (SETUP / "terminal.log").read_text().splitlines())
    assert png.width >= min(widest, 100) * 12, "about 8 px per column at 13 px x2"
    # the dark terminal background dominates
    assert ImageStat.Stat(png.convert("L")).median[0] < 60


@pytest.mark.skipif(not shutil.which("pdftoppm"), reason="pdftoppm not installed (apt install poppler-utils)")
def test_pdf_renders_every_page(report, tmp_path):
    result, out = report
    assert not result.problems, result.problems
    info = subprocess.run(["pdfinfo", str(out / "report.pdf")], capture_output=True, text=True).stdout
    pages = int(re.search(r"Pages:\s+(\d+)", info).group(1))
    assert 3 <= pages <= 8
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(out / "report.pdf"), str(tmp_path / "p")], check=True)
    images = sorted(tmp_path.glob("p-*.png"))
    assert len(images) == pages
    assert all(_non_blank(Image.open(p)) for p in images)
    text = subprocess.run(["pdftotext", str(out / "report.pdf"), "-"], capture_output=True, text=True).stdout
    assert "1. Procedure" in text and "5. Timings and smoke tests" in text
    with zipfile.ZipFile(out / "report.zip") as z:
        names = z.namelist()
    assert "densepose-report/report.pdf" in names and "densepose-report/terminal.png" in names
    assert sum(n.startswith("densepose-report/images/") for n in names) == 5


def test_a_failed_step_is_reported_first(tmp_path):
    setup = tmp_path / "20260610-091500-setup"
    shutil.copytree(SETUP, setup)
    steps = json.loads((setup / "steps.json").read_text())[:2]
    steps[1].update(status="failed", output="ninja: build stopped: subcommand failed.")
    (setup / "steps.json").write_text(json.dumps(steps))
    (setup / "logs" / "build.log").write_text("nvcc fatal   : Unsupported gpu architecture 'compute_120'\n")
    result = write(setup, PREDICT, tmp_path / "out", formats=("md", "html"))
    md = (tmp_path / "out" / "report.md").read_text()
    first_section = md.split("## 1.")[0]
    assert result.status == "FAILED"
    assert "FAILED" in first_section and "step `build` failed" in first_section
    assert "Unsupported gpu architecture" in first_section, "the failed step's log tail"
    assert "weights** — not run" in md and "smoke** — not run" in md
    assert 'class="banner FAILED"' in (tmp_path / "out" / "report.html").read_text()


def test_no_predict_run_says_so(tmp_path):
    result = write(SETUP, None, tmp_path, formats=("md",))
    md = (tmp_path / "report.md").read_text()
    assert result.status == "INCOMPLETE" and "No predict run was found" in md
    assert "No photos" in md


def test_failed_photo_and_prefers_the_predict_terminal(tmp_path):
    pred = tmp_path / "20260610-093000-predict"
    shutil.copytree(PREDICT, pred)
    summary = json.loads((pred / "predict" / "summary.json").read_text())
    summary["images"][0].update(status="error", error="CUDA out of memory")
    (pred / "predict" / "summary.json").write_text(json.dumps(summary))
    (pred / "terminal.log").write_text("\x1b[31mpredict: 1 of 1 failed\x1b[0m\n")
    result = write(SETUP, pred, tmp_path / "out", formats=("md",))
    md = (tmp_path / "out" / "report.md").read_text()
    assert result.status == "FAILED" and "predict failed on `grace_hopper`" in md.split("## 1.")[0]
    assert "invoke predict grace_hopper.jpg" in (tmp_path / "out" / "terminal.svg").read_text()


def test_prompt_is_the_first_command_line_wrapped():
    from dpdeploy.report.screenshot import _lines_for_drawing, screen
    long_cmd = "invoke predict " + "a/" * 80 + "x.jpg\n# worker:\n/env/bin/python -m worker"
    s = screen("line one\nline two\n", long_cmd, columns=60)
    rows = ["".join(sp.text for sp in row) for row in _lines_for_drawing(s)]
    assert rows[0].startswith("$ invoke predict") and all(len(r) <= 60 for r in rows)
    assert not any("# worker" in r for r in rows)
    assert rows[-2:] == ["line one", "line two"]


def test_outputs_sent_elsewhere_with_out_are_found_through_the_run_record(tmp_path):
    """`invoke predict photos/ --out mine/`: the run record keeps the summary, which says where
    the outputs went; the report shows those photos (nested output folders included)."""
    from dpdeploy.records import predict_summary

    run, mine = tmp_path / "20260610-093000-predict", tmp_path / "mine"
    shutil.copytree(PREDICT, run)
    shutil.move(run / "predict" / "grace_hopper", mine / "trip" / "grace_hopper")
    (run / "predict" / "summary.json").unlink()
    summary = predict_summary.read(PREDICT / "predict")
    summary.out = str(mine)
    summary.images[0]["stem"] = "trip/grace_hopper"
    predict_summary.write(run, summary)
    result = write(SETUP, run, tmp_path / "out", formats=("md",))
    md = (tmp_path / "out" / "report.md").read_text()
    assert result.status == "OK", result.headline
    assert "has no predict/summary.json" not in md and "images/trip/grace_hopper-dp_contour" in md.replace("%2F", "/")


def test_quoted_run_output_has_no_escape_codes(tmp_path):
    run = tmp_path / "20260610-093000-predict"
    shutil.copytree(PREDICT, run)
    (run / "predict" / "summary.json").unlink()
    (run / "terminal.log").write_text("\x1b[31m✗\x1b[0m bad_text.jpg: cannot identify image file\n")
    write(SETUP, run, tmp_path / "out", formats=("md",))
    md = (tmp_path / "out" / "report.md").read_text()
    assert "✗ bad_text.jpg: cannot identify image file" in md
    assert "\x1b" not in md and "[31m" not in md and "[0m" not in md


def test_procedure_documents_the_run_that_did_the_work(tmp_path):
    """A later no-op setup: the procedure shows the earlier run's command and durations and says
    that the later run only confirmed them."""
    from dpdeploy.records import run as run_record

    runs = tmp_path / "runs"
    first, later = runs / "20260610-091500-setup", runs / "20260611-080000-setup"
    shutil.copytree(SETUP, first)
    shutil.copytree(SETUP, later)
    confirmed = [run_record.StepResult(s.name, "up-to-date", "", 0.1, "matches") for s in run_record.read_steps(first)]
    (later / "steps.json").unlink()
    (later / "command.txt").write_text("invoke setup --again\n")
    for step in confirmed:
        run_record.RunRecord(later).add_step(step)
    write(later, None, tmp_path / "out", formats=("md",))
    md = (tmp_path / "out" / "report.md").read_text()
    assert "done in run 20260610-091500-setup" in md and "20260611-080000-setup included, only confirmed it" in md
    assert "118.4" in md, "the env step's duration is the run that built it"


def test_setup_alone_shows_the_smoke_checks_images(tmp_path):
    run = tmp_path / "20260610-091500-setup"
    shutil.copytree(SETUP, run)
    shutil.copytree(PREDICT / "predict" / "grace_hopper", run / "smoke" / "predict" / "grace_hopper")
    (run / "smoke.json").write_text(json.dumps({"ok": True, "check": "pipeline check without real weights"}))
    result = write(run, None, tmp_path / "out", formats=("md",))
    md = (tmp_path / "out" / "report.md").read_text()
    assert result.status == "OK" and "smoke check drew DensePose on 1 sample photo" in result.headline
    assert "smoke check: grace_hopper" in md and "NOT a real DensePose estimate" in md
    assert "dp_contour" in md


def _killed(folder):
    """A setup run killed with -9 half way: result.json still says running, its process is gone."""
    result = json.loads((folder / "result.json").read_text())
    result.update(status="running", pid=2 ** 22 + 1, ended=0)   # above pid_max's default: no such process
    (folder / "result.json").write_text(json.dumps(result))
    steps = json.loads((folder / "steps.json").read_text())[:1]
    (folder / "steps.json").write_text(json.dumps(steps))


def test_an_interrupted_setup_is_never_presented_as_done(tmp_path):
    run = tmp_path / "20260611-080000-setup"
    shutil.copytree(SETUP, run)
    _killed(run)
    result = write(run, None, tmp_path / "out", formats=("md",))
    md = (tmp_path / "out" / "report.md").read_text()
    assert result.status == "FAILED" and "is interrupted: it did not finish" in md.split("## 1.")[0]
    assert "**Deploy** — interrupted" in md or "Deploy** — interrupted" in md, md[:3000]


def test_invoke_report_documents_the_last_finished_setup_and_names_the_interrupted_one(tmp_path):
    from .conftest import ROOT

    runs = tmp_path / "runs"
    done, killed = runs / "20260610-091500-setup", runs / "20260611-080000-setup"
    shutil.copytree(SETUP, done)
    shutil.copytree(SETUP, killed)
    _killed(killed)
    proc = subprocess.run([str(ROOT / ".venv/bin/invoke"), "report", "--format", "md"], cwd=ROOT, capture_output=True,
                          text=True, env={**__import__("os").environ, "DPDEPLOY_HOME": str(tmp_path), "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stderr
    md = (done / "report" / "report.md").read_text()
    assert not (killed / "report").exists()
    assert f"Setup run {killed.name} was interrupted" in md and f"documents {done.name}" in md
    assert "Deploy** — done" in md
