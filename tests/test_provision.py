"""`invoke provision`'s pure parts: the command line, the PLAY RECAP parser, the bundle, the driver floor."""
import importlib.util
import json
import os
import subprocess
import sys
import tarfile

import pytest

from dpdeploy.fleet import project_archive as bundle, ansible as provision
from dpdeploy.plan import driver
from dpdeploy.plan.matrix import MatrixError

from .conftest import ROOT

RECAP = """\
TASK [densepose : Show the plan's profile and device] ****************************
ok: [gpu1]

PLAY RECAP *********************************************************************
gpu1                       : ok=21   changed=3    unreachable=0    failed=0    skipped=4    rescued=0    ignored=0
gpu2                       : ok=2    changed=0    unreachable=1    failed=0    skipped=0    rescued=0    ignored=0
\x1b[0;31mcpu1\x1b[0m                       : ok=7    changed=0    unreachable=0    failed=1    skipped=1    rescued=0    ignored=0
cpu2                       : ok=19   changed=0    unreachable=0    failed=0    skipped=6    rescued=0    ignored=0

Sunday 23 November 2026  09:50:01 +0000 (0:00:00.020)       0:00:33.101 *******
===============================================================================
base : Install the build and runtime packages --------------------------- 25.31s
"""  # noqa: E501 (ansible's recap lines, verbatim)


def test_recap_one_entry_per_host_with_status():
    recaps = provision.parse_recap(RECAP.splitlines())
    assert [(r.host, r.status) for r in recaps] == [
        ("gpu1", "changed"), ("gpu2", "unreachable"), ("cpu1", "failed"), ("cpu2", "ok")]
    assert recaps[0].ok == 21 and recaps[0].changed == 3 and recaps[0].skipped == 4
    assert recaps[2].failed == 1 and recaps[3].to_dict()["status"] == "ok"


def test_recap_takes_the_last_play_recap_and_ignores_timings():
    text = "PLAY RECAP ***\nold : ok=1 changed=1 unreachable=0 failed=0\n\n" + RECAP
    assert [r.host for r in provision.parse_recap(text.splitlines())] == ["gpu1", "gpu2", "cpu1", "cpu2"]
    assert provision.parse_recap(["TASK [x] ***", "ok: [h]"]) == []


def test_summary_names_the_hosts_that_did_not_converge():
    text = provision.summary_text(provision.parse_recap(RECAP.splitlines()), 2)
    assert "2/4 hosts converged; failed or unreachable: gpu2, cpu1" in text
    assert "gpu1  changed      ok=21 changed=3" in text
    assert "no PLAY RECAP" in provision.summary_text([], 4) and "exited 4" in provision.summary_text([], 4)


def test_playbook_argv():
    argv = provision.playbook_argv("ansible-playbook", inventory="inv.yml", limit="gpu1,gpu2", check=True,
                                   extra_vars='densepose_setup_steps=["env"]')
    assert argv == ["ansible-playbook", "-i", "inv.yml", str(provision.PLAYBOOK), "--limit", "gpu1,gpu2", "--check",
                    "--extra-vars", 'densepose_setup_steps=["env"]']
    plain = provision.playbook_argv("/v/bin/ansible-playbook")
    assert plain == ["/v/bin/ansible-playbook", "-i", str(provision.DEFAULT_INVENTORY), str(provision.PLAYBOOK)]
    env = provision.playbook_env({"PATH": "/bin"})
    assert env["ANSIBLE_CONFIG"].endswith("ansible/ansible.cfg") and env["ANSIBLE_NOCOLOR"] == "1"


def test_bundle_ships_the_engine_not_the_venv_or_caches(tmp_path):
    (ROOT / "dpdeploy" / "__pycache__").mkdir(exist_ok=True)
    files = {str(p) for p in bundle.project_files()}
    assert {"bootstrap.py", "tasks.py", "env/matrix.yml", "requirements/tools.txt", "dpdeploy/plan/resolve.py"} <= files
    assert not any(f.startswith((".venv", ".git", "tests/", "ansible/", "reports/")) or "__pycache__" in f
                   for f in files)
    first = bundle.write_bundle(tmp_path / "a.tar.gz")
    with tarfile.open(first) as tar:
        members = tar.getmembers()
    assert sorted(m.name for m in members) == sorted(files)
    assert all(m.uid == 0 and m.uname == "root" for m in members)
    by_name = {m.name: m for m in members}
    assert by_name["bootstrap.py"].mtime == int((ROOT / "bootstrap.py").stat().st_mtime)


def test_bundle_command_line(tmp_path):
    out = tmp_path / "sub" / "b.tar.gz"
    proc = subprocess.run([sys.executable, "-m", "dpdeploy.fleet.project_archive", str(out)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == str(out) and tarfile.is_tarfile(out)
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_driver_requirement_comes_from_the_matrix(matrix):
    need = driver.requirement(matrix, "auto")
    assert need == {"profile": matrix.auto_gpu[0], "cuda": "13.0", "min_driver": "580.65.06", "branch": 580,
                    "branch_ok": True}
    assert driver.requirement(matrix, "cu126")["min_driver"] == matrix.profile("cu126").min_driver
    with pytest.raises(MatrixError, match="needs no NVIDIA driver"):
        driver.requirement(matrix, "cpu")


def test_driver_command_line():
    proc = subprocess.run([sys.executable, "-m", "dpdeploy.plan.driver", "cu130"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and json.loads(proc.stdout)["branch"] == 580
    bad = subprocess.run([sys.executable, "-m", "dpdeploy.plan.driver", "nope"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown profile 'nope'" in bad.stderr


def _pci(root, slot, vendor, klass, device="0x2330"):
    d = root / slot
    d.mkdir(parents=True)
    (d / "vendor").write_text(vendor + "\n")
    (d / "class").write_text(klass + "\n")
    (d / "device").write_text(device + "\n")


def test_pci_gpu_module_reads_sysfs(tmp_path):
    pytest.importorskip("ansible.module_utils.basic", reason="ansible is not installed (requirements/ansible.txt)")
    path = ROOT / "ansible" / "roles" / "nvidia_driver" / "library" / "nvidia_pci_gpus.py"
    spec = importlib.util.spec_from_file_location("nvidia_pci_gpus", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _pci(tmp_path, "0000:01:00.0", "0x10de", "0x030200")              # H100 (3D controller)
    _pci(tmp_path, "0000:01:00.1", "0x10de", "0x040300", "0x22ba")    # its HDMI audio: not a GPU
    _pci(tmp_path, "0000:00:02.0", "0x8086", "0x030000", "0x3e92")    # Intel iGPU
    _pci(tmp_path, "0000:02:00.0", "0x10de", "0x068000", "0x22a3")    # NVSwitch: bridge class
    assert mod.nvidia_gpus(str(tmp_path)) == [{"slot": "0000:01:00.0", "device": "0x2330", "class": "0x030200"}]
    assert [d["device"] for d in mod.nvidia_gpus(str(tmp_path), mod.BRIDGE_CLASS)] == ["0x22a3"]
    assert mod.nvidia_gpus(str(tmp_path / "missing")) == []


def test_provision_dry_prints_the_command_and_writes_nothing(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "invoke", "provision", "--dry", "--check", "--limit", "gpu1",
                           "--inventory", "inv.yml"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "DPDEPLOY_HOME": str(tmp_path)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[1:] == ["-i", "inv.yml", str(provision.PLAYBOOK), "--limit", "gpu1", "--check"]
    assert proc.stdout.split()[0].endswith("ansible-playbook")
    assert not any(tmp_path.iterdir()), "--dry must not create a run record"
