"""Installed versions from the stamps, and the terminal capture of a real setup run."""
import json
import os
import subprocess
import sys

from dpdeploy.records.run import read_result, read_steps
from dpdeploy.records.versions import MISSING, collect

from .conftest import FIXTURES, ROOT


def test_versions_tolerate_missing_stamps(tmp_path):
    rows = {v.name: v.value for v in collect(tmp_path, {"driver_version": None, "gpus": []})}
    assert rows["torch"] == MISSING and rows["detectron2 commit"] == MISSING
    assert rows["GPUs"] == "none"


def test_capture_tees_a_child_process_output_with_colours(tmp_path):
    script = ("from dpdeploy.records.terminal import capture\n"
              f"with capture({str(tmp_path)!r}, 'demo --flag'):\n"
              "    print('\\x1b[31mred\\x1b[0m line')\n"
              "    import sys; print('to stderr', file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[31mred" in proc.stdout, "the real terminal still gets the output"
    log = (tmp_path / "terminal.log").read_text()
    assert "\x1b[31mred\x1b[0m line\n" in log and "to stderr" in log
    assert (tmp_path / "command.txt").read_text() == "demo --flag\n"


def test_setup_records_terminal_command_and_versions(tmp_path):
    """A real `invoke setup` process whose env step fails fast (cu126 has no lock here): the run
    record still has the command, the coloured terminal, the step and the versions."""
    env = {**os.environ, "DPDEPLOY_HOME": str(tmp_path), "FORCE_COLOR": "1"}
    env.pop("NO_COLOR", None)
    args = ["setup", "--only", "env", "--profile", "cu126", "--facts", str(FIXTURES / "facts" / "nogpu.json")]
    proc = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr   # a refused step (no lock for cu126)
    [run] = list((tmp_path / "runs").iterdir())
    assert (run / "command.txt").read_text().strip().endswith(" ".join(args))
    assert read_result(run).status == "failed" and [s.name for s in read_steps(run)] == ["env"]
    log = (run / "terminal.log").read_text()
    assert "\x1b[1mPlan\x1b[0m" in log and "==> env" in log and f"run record: {run}" in log
    names = [v["name"] for v in json.loads((run / "versions.json").read_text())]
    assert "torch" in names and "compiled archs" in names
