"""Installed versions from the stamps, and the terminal capture of a real setup run."""
import json
import os
import subprocess
import sys

from dpdeploy.records.versions import MISSING, collect

from .conftest import FIXTURES, ROOT


def test_versions_tolerate_missing_stamps(tmp_path):
    rows = {v.name: v.value for v in collect(tmp_path, {"driver_version": None, "gpus": []})}
    assert rows["torch"] == MISSING and rows["detectron2 commit"] == MISSING
    assert rows["GPUs"] == "none"


def test_versions_read_the_stamps(tmp_path):
    (tmp_path / ".dpdeploy-env.json").write_text(json.dumps({"packages": {"torch": "2.14.1"}, "cuda": "13.0"}))
    (tmp_path / ".dpdeploy-build.json").write_text(json.dumps({"commit": "02b5c4e", "compiled_archs": ["sm_90", "compute_90"]}))
    rows = {v.name: v.value for v in collect(tmp_path, {"gpus": [{"name": "H100", "compute_capability": "9.0"}]})}
    assert rows["torch"] == "2.14.1" and rows["CUDA (torch build)"] == "13.0"
    assert rows["detectron2 commit"] == "02b5c4e" and rows["compiled archs"] == "sm_90, compute_90"
    assert rows["torchvision"] == "not recorded" and rows["GPUs"] == "H100 (sm_9.0)"


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
    env = {**os.environ, "DPDEPLOY_HOME": str(tmp_path), "FORCE_COLOR": "1"}
    env.pop("NO_COLOR", None)
    proc = subprocess.run([sys.executable, "-m", "invoke", "setup", "--only", "env", "--facts",
                           str(FIXTURES / "facts" / "nogpu.json")], cwd=ROOT, capture_output=True, text=True, env=env)
    [run] = list((tmp_path / "runs").iterdir())
    assert (run / "command.txt").read_text().strip().endswith("setup --only env --facts " + str(FIXTURES / "facts" / "nogpu.json"))
    log = (run / "terminal.log").read_text()
    assert "\x1b[1mPlan\x1b[0m" in log and "==> env" in log and f"run record: {run}" in log
    names = [v["name"] for v in json.loads((run / "versions.json").read_text())]
    assert "torch" in names and "compiled archs" in names
