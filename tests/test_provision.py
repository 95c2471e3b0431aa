"""`invoke provision`'s parts: the command line, the summary from the JSON callback, the bundle, the driver floor."""
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from dpdeploy.fleet import project_archive as bundle, ansible as provision
from dpdeploy.plan import driver
from dpdeploy.plan.matrix import MatrixError

from .conftest import ROOT

ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
needs_ansible = pytest.mark.skipif(not ANSIBLE_PLAYBOOK.is_file(),
                                   reason="ansible is not installed (requirements/ansible.txt)")

# Three local hosts: one changes, one fails like a GPU host with a pending reboot, one is unreachable.
PLAY = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: Reach the host
      ansible.builtin.ping:
    - name: Change something
      ansible.builtin.copy:
        content: "x"
        dest: "{{ out_dir }}/changed"
        mode: "0644"
      when: inventory_hostname == 'changes'
    - name: Stop this host while its reboot is pending
      ansible.builtin.fail:
        msg: "nvidia_driver: reboot pending on {{ inventory_hostname }}"
      when: inventory_hostname == 'pending'
    - name: Say hello
      ansible.builtin.debug:
        msg: hello
"""


def _site_play() -> str:
    """PLAY under site.yml's own play keywords (strategy, serial, max_fail_percentage)."""
    [site, *_] = yaml.safe_load((ROOT / "ansible" / "site.yml").read_text())
    [play] = yaml.safe_load(PLAY)
    return yaml.safe_dump([{**play, **{k: site[k] for k in ("strategy", "serial", "max_fail_percentage")}}])


def _real_run(tmp_path, check=False, **fleet):
    """ansible-playbook with the environment and command line `invoke provision` uses; its output."""
    inv = tmp_path / "inv.yml"
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inv.write_text(json.dumps({"all": {"hosts": {
        "changes": {**local, "out_dir": str(tmp_path)}, "pending": local, "steady": local,
        "gone": {"ansible_host": "127.0.0.1", "ansible_port": 1, "ansible_user": "nobody"}}}}))
    play = tmp_path / "play.yml"
    play.write_text(_site_play())
    argv = provision.playbook_argv(str(ANSIBLE_PLAYBOOK), inventory=inv, playbook=play, check=check, **fleet)
    # stdin closed, as `invoke provision` runs it: ansible refuses a non-blocking stdin, and a test
    # before this one may have left the shared one so (seen in a full CI run)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          env=provision.playbook_env({**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "False"}))
    return proc.returncode, proc.stderr + proc.stdout     # as runner.stream merges them: warnings first


@needs_ansible
def test_summary_comes_from_the_json_callback_with_why_a_host_failed(tmp_path):
    rc, out = _real_run(tmp_path)
    recaps = provision.parse_json(out)
    assert rc != 0
    assert recaps, f"no JSON summary in ansible-playbook's output (exit {rc}):\n{out[-4000:]}"
    assert [(r.host, r.status) for r in recaps] == [
        ("changes", "changed"), ("gone", "unreachable"), ("pending", "failed"), ("steady", "ok")]
    by = {r.host: r for r in recaps}
    assert by["changes"].changed == 1 and by["steady"].ok == 2 and by["pending"].failed == 1
    assert "reboot pending on pending" in by["pending"].message and by["gone"].message
    text = provision.summary_text(recaps, rc)
    assert "2/4 hosts converged; failed or unreachable: gone, pending" in text
    assert "Stop this host while its reboot is pending: nvidia_driver: reboot pending on pending" in text


@needs_ansible
def test_check_mode_summary_says_would_change_not_converged(tmp_path):
    rc, out = _real_run(tmp_path, True)
    recaps = provision.parse_json(out, check=True)
    assert recaps, f"no JSON summary in ansible-playbook's output (exit {rc}):\n{out[-4000:]}"
    assert {r.host: r.status for r in recaps}["changes"] == "would change"
    text = provision.summary_text(recaps, rc, check=True)
    assert "1/4 hosts would change, 1 already converged" in text and "hosts converged" not in text
    assert "check mode: nothing was changed" in text


@needs_ansible
def test_rolling_run_stops_at_the_batch_that_failed(tmp_path):
    """--serial 1 --max-fail 0: 'pending' fails in the second batch, the hosts after it are never
    touched (site.yml turns to the linear strategy: the free one ignores max_fail_percentage)."""
    rc, out = _real_run(tmp_path, serial="1", max_fail=0)
    recaps = provision.parse_json(out)
    assert rc != 0 and [(r.host, r.status) for r in recaps] == [("changes", "changed"), ("pending", "failed")], out[-4000:]
    assert "not supported" not in out


def test_no_json_document_is_no_summary():
    assert provision.parse_json("[WARNING]: x\nERROR! the playbook could not be found\n") == []
    assert "no per-host results" in provision.summary_text([], 4) and "exited 4" in provision.summary_text([], 4)
    # Warnings before the document and a stray brace line do not confuse the reader.
    doc = json.dumps({"plays": [], "stats": {"h": {"ok": 1, "changed": 0, "failures": 0, "unreachable": 0}}},
                     indent=4)
    assert [r.host for r in provision.parse_json("[WARNING]: {odd}\n{\nnot json\n" + doc)] == ["h"]
    # stderr + stdout merged: a warning without a final newline runs into the document's brace
    assert [r.host for r in provision.parse_json("DeprecationWarning: no newline" + doc)] == ["h"]


def test_playbook_argv_with_fleet_flags():
    argv = provision.playbook_argv("ap", inventory="i", forks=5, serial="25%", max_fail=10, bundle="/r/b.tar.gz",
                                   extra_vars="x=1")
    assert argv[:4] == ["ap", "-i", "i", str(provision.PLAYBOOK)] and argv[4:6] == ["--forks", "5"]
    assert json.loads(argv[7]) == {"dpdeploy_serial": "25%", "dpdeploy_max_fail_percentage": 10,
                                   "densepose_bundle": "/r/b.tar.gz"}
    assert argv[8:] == ["--extra-vars", "x=1"]     # the user's variables last: they win
    for bad in ({"forks": -1}, {"serial": "x"}, {"serial": "0"}, {"max_fail": 101}):
        with pytest.raises(provision.ProvisionError):
            provision.playbook_argv("ap", **bad)
    env = provision.playbook_env({})
    assert env["ANSIBLE_STDOUT_CALLBACK"] == "ansible.posix.json" and env["ANSIBLE_CALLBACKS_ENABLED"] == ""


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


def test_provision_refuses_bad_flags_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "invoke", "provision", "--dry", "--max-fail", "150"], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "DPDEPLOY_HOME": str(tmp_path)}, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --max-fail 150") and "Traceback" not in proc.stderr


# --- the Ray cluster: the flag and the engine's answer the ray_cluster role renders ---------------

def test_playbook_argv_with_ray_sets_the_roles_switch():
    argv = provision.playbook_argv("ap", inventory="i", ray=True, extra_vars="x=1")
    assert argv[4:6] == ["--extra-vars", json.dumps({"ray_cluster_enabled": True})] and argv[6:] == ["--extra-vars", "x=1"]
    assert "ray_cluster_enabled" not in " ".join(provision.playbook_argv("ap"))     # off unless asked


def test_provision_dry_ray(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "invoke", "provision", "--dry", "--ray", "--inventory", "inv.yml"],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "DPDEPLOY_HOME": str(tmp_path)},
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith("""--extra-vars '{"ray_cluster_enabled": true}'"""), proc.stdout


def _plan(profile="cpu-ray", device="cpu", gpus=0):
    return {"profile": profile, "device": device, "prefix": f"/var/lib/dpdeploy/envs/{profile}",
            "home": "/var/lib/dpdeploy", "gpus": [{"index": i, "name": "NVIDIA H100", "compute_capability": "9.0"}
                                                  for i in range(gpus)]}


def test_ray_node_head_and_worker(matrix):
    from dpdeploy.plan import ray_node

    head = ray_node.node(_plan(), head=True, project_dir="/opt/dpdeploy", matrix=matrix)
    ray = "/var/lib/dpdeploy/envs/cpu-ray/bin/ray"
    assert head["argv"] == [ray, "start", "--block", "--head", "--port=6379", "--include-dashboard=false",
                            "--num-gpus=0", "--disable-usage-stats"]
    assert head["exec_start"] == " ".join(head["argv"]) and head["exec_stop"] == f"{ray} stop"
    assert head["environment"]["PYTHONPATH"] == "/opt/dpdeploy" and head["environment"]["DPDEPLOY_HOME"] == "/var/lib/dpdeploy"
    assert head["environment"]["PATH"].startswith("/var/lib/dpdeploy/envs/cpu-ray/bin:")
    worker = ray_node.node(_plan(), head=False, address="10.0.0.1", port=6380, num_cpus="4", object_store_mb=512,
                           metrics_port=8080, node_ip="10.0.0.2", matrix=matrix)
    assert worker["argv"] == [ray, "start", "--block", "--address=10.0.0.1:6380", "--node-ip-address=10.0.0.2",
                              "--num-gpus=0", "--num-cpus=4", f"--object-store-memory={512 * 2**20}",
                              "--metrics-export-port=8080", "--disable-usage-stats"]
    assert worker["role"] == "worker" and worker["address"] == "10.0.0.1:6380"


def test_ray_node_advertises_only_the_gpus_the_env_can_use(matrix):
    from dpdeploy.plan import ray_node

    # A CPU env on a GPU host: 0 GPUs advertised (no num_gpus=1 actor may land there), and why.
    cpu = ray_node.node(_plan(gpus=8), head=True, matrix=matrix)
    assert cpu["num_gpus"] == 0 and "8 GPU(s) seen, not usable by this env" in " ".join(cpu["reasons"])
    with pytest.raises(ray_node.RayNodeError, match="cannot use a GPU"):
        ray_node.node(_plan(gpus=8), head=True, num_gpus="2", matrix=matrix)
    # A plan on CUDA (a profile with the ray extra): the plan's GPUs, or an explicit count.
    cuda = _plan("cu130-ray", device="cuda", gpus=4)
    assert ray_node.node(cuda, head=True, matrix=matrix)["num_gpus"] == 4
    assert "--num-gpus=2" in ray_node.node(cuda, head=True, num_gpus=2, matrix=matrix)["argv"]
    for bad in ({"num_gpus": "many"}, {"num_cpus": "-1"}, {"port": 0}, {"object_store_mb": -5}):
        with pytest.raises(ray_node.RayNodeError):
            ray_node.node(_plan(), head=True, matrix=matrix, **bad)
    with pytest.raises(ray_node.RayNodeError, match="needs the head's address"):
        ray_node.node(_plan(), head=False, matrix=matrix)


def test_ray_node_refuses_a_profile_without_ray(matrix):
    from dpdeploy.plan import ray_node

    with pytest.raises(ray_node.RayNodeError, match=r"profile cpu has no Ray .*extras: \[ray\] \(cpu-ray, cu130-ray\)"):
        ray_node.node(_plan("cpu"), head=True, matrix=matrix)
    proc = subprocess.run([sys.executable, "-m", "dpdeploy.plan.ray_node", "--plan", json.dumps(_plan("cu130")),
                           "--head"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: profile cu130 has no Ray")
    ok = subprocess.run([sys.executable, "-m", "dpdeploy.plan.ray_node", "--plan", json.dumps(_plan()),
                         "--address", "head.example.org"], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and "--address=head.example.org:6379" in json.loads(ok.stdout)["argv"]
