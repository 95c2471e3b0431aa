"""ansible/: lint, syntax, and a real converge of site.yml into a fresh Debian 12 root filesystem.

The converge goes through the community.general.chroot connection (no Docker, no SSH): a minbase
bookworm made with debootstrap (cached as a tarball, unpacked fresh for each test session).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dpdeploy.plan import os_packages

from dpdeploy.fleet import ansible as provision

from .conftest import ROOT

BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = BIN / "ansible-playbook"
pytestmark = pytest.mark.skipif(
    not ANSIBLE_PLAYBOOK.is_file(),
    reason="ansible is not installed (pip install --require-hashes -r requirements/ansible.txt)")

# Cached between runs (CI machines may be reused); each session unpacks a fresh copy.
ROOTFS_CACHE = Path(os.environ.get("DPDEPLOY_TEST_ROOTFS_CACHE", "/var/tmp/dpdeploy-test/bookworm-minbase.tar"))
# Steps the densepose role runs in the chroot: "plan" records facts + plan without installing.
STEPS = [s for s in os.environ.get("DPDEPLOY_TEST_ANSIBLE_STEPS", "plan").split(",") if s]
INJECTED_GPU = [{"slot": "0000:01:00.0", "device": "0x2330", "class": "0x030200"}]   # an H100 SXM


def _run(argv, **kw):
    # stdin closed: ansible refuses a non-blocking one, which an earlier test may leave behind
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)


def test_ansible_lint_production_profile_is_clean():
    proc = _run([str(BIN / "ansible-lint"), "--profile", "production", "--offline", "--nocolor"],
                cwd=ROOT / "ansible", env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Profile 'production' was required, and it passed" in proc.stdout + proc.stderr


def test_site_yml_syntax_check():
    argv = provision.playbook_argv(str(ANSIBLE_PLAYBOOK)) + ["--syntax-check"]
    proc = _run(argv, env=provision.playbook_env(dict(os.environ)), timeout=120)
    assert proc.returncode == 0 and "playbook: " in proc.stdout, proc.stdout + proc.stderr


# --- the real converge ----------------------------------------------------------------------

def _cached_rootfs() -> Path:
    if ROOTFS_CACHE.is_file():
        return ROOTFS_CACHE
    build = ROOTFS_CACHE.parent / "rootfs.build"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    made = _run(["debootstrap", "--variant=minbase", "bookworm", str(build), "http://deb.debian.org/debian"],
                timeout=900)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    tmp = ROOTFS_CACHE.with_suffix(".tmp")
    assert _run(["tar", "-C", str(build), "-cf", str(tmp), "."]).returncode == 0
    os.replace(tmp, ROOTFS_CACHE)    # last: a half-made tarball is never taken for the cache
    shutil.rmtree(build)
    return ROOTFS_CACHE


@pytest.fixture(scope="module")
def chroot_host(tmp_path_factory):
    """A fresh bookworm rootfs and an inventory that reaches it through the chroot connection."""
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        pytest.skip("the chroot converge needs root and debootstrap (apt-get install debootstrap)")
    base = tmp_path_factory.mktemp("converge")
    rootfs = base / "rootfs"
    rootfs.mkdir()
    assert _run(["tar", "-C", str(rootfs), "-xf", str(_cached_rootfs())]).returncode == 0
    # Trust what this machine trusts (e.g. a TLS-intercepting egress proxy's CA): the base role's
    # ca-certificates picks up /usr/local/share/ca-certificates like on any Debian host.
    local_cas = Path("/usr/local/share/ca-certificates")
    if local_cas.is_dir():
        shutil.copytree(local_cas, rootfs / "usr/local/share/ca-certificates", dirs_exist_ok=True)
    inventory = base / "inventory.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {"bookworm": {
        "ansible_connection": "community.general.chroot",
        "ansible_host": str(rootfs),
        "ansible_become": False,                       # already root; minbase has no sudo
        "densepose_setup_steps": STEPS,
        "densepose_reports_dir": str(base / "reports"),
    }}}}))
    return {"rootfs": rootfs, "inventory": inventory, "reports": base / "reports", "home": base / "home"}


def _provision(host, *args):
    """`invoke provision --json` as a user runs it; returns its summary."""
    proc = _run([sys.executable, "-m", "invoke", "provision", "--json", "--inventory", str(host["inventory"]), *args],
                cwd=ROOT, env={**os.environ, "DPDEPLOY_HOME": str(host["home"])}, timeout=1800)
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    summary["output"] = Path(summary["log"]).read_text()
    return proc.returncode, summary


@pytest.fixture(scope="module")
def converged(chroot_host):
    first = _provision(chroot_host)
    second = _provision(chroot_host)
    return first, second


@pytest.mark.slow
def test_first_converge_installs(converged):
    (rc, summary), _ = converged
    assert rc == 0, summary["output"][-4000:]
    [host] = summary["hosts"]
    assert host["host"] == "bookworm" and host["status"] == "changed" and host["failed"] == 0
    assert "nvidia_driver: no NVIDIA GPU on bookworm" in summary["output"]


@pytest.mark.slow
def test_second_converge_changes_nothing(converged):
    _, (rc, summary) = converged
    assert rc == 0, summary["output"][-4000:]
    doc = provision._json_document(summary["output"])
    changed = [t["task"]["name"] for p in doc["plays"] for t in p["tasks"]
               if t["hosts"].get("bookworm", {}).get("changed")]
    assert [(h["host"], h["changed"], h["failed"]) for h in summary["hosts"]] == [("bookworm", 0, 0)], changed


@pytest.mark.slow
def test_rootfs_has_the_packages_and_tools(converged, chroot_host, monkeypatch):
    testinfra = pytest.importorskip("testinfra")
    monkeypatch.setenv("PATH", f"{BIN}:{os.environ['PATH']}")      # testinfra runs `ansible` from PATH
    host = testinfra.get_host(f"ansible://bookworm?ansible_inventory={chroot_host['inventory']}&force_ansible=true")
    assert host.package("build-essential").is_installed
    wanted = [p for p in os_packages.load().names("host", "Debian-12") if p != "build-essential"]   # the one table
    # One dpkg query for the rest (each testinfra check is an ansible run of its own, ~2 s).
    status = host.run("dpkg-query -W -f='${Package} ${db:Status-Status}\\n' " + " ".join(wanted))
    assert status.rc == 0 and sorted(status.stdout.splitlines()) == sorted(f"{p} installed" for p in wanted)
    gcc = host.run("gcc -dumpversion")
    assert gcc.rc == 0 and int(gcc.stdout.split(".")[0]) <= 15      # nvcc 13.0 accepts gcc <= 15
    assert host.run("python3 -m venv /tmp/venv-check && /tmp/venv-check/bin/python -c 'import sys'").rc == 0
    assert host.file("/opt/dpdeploy/bootstrap.py").exists
    assert host.run("/opt/dpdeploy/.venv/bin/invoke --version").rc == 0
    assert not host.file("/etc/apt/sources.list.d/nvidia-cuda.list").exists


@pytest.mark.slow
def test_densepose_role_ran_the_engine_and_fetched_its_record(converged, chroot_host):
    if "plan" not in STEPS:
        pytest.skip(f"DPDEPLOY_TEST_ANSIBLE_STEPS={','.join(STEPS)}: checked by the step's own outputs")
    plan = json.loads((chroot_host["reports"] / "bookworm" / "plan.json").read_text())
    assert plan["profile"] == "cpu" and plan["min_driver"] is None     # no GPU in the chroot
    assert plan["home"] == "/var/lib/dpdeploy"
    facts = json.loads((chroot_host["reports"] / "bookworm" / "facts.json").read_text())
    assert facts["os_id"] == "debian" and facts["os_version"] == "12"


# --- the ray_cluster role (invoke provision --ray) on the same converged rootfs ------------------

RAY_UNIT = "etc/systemd/system/dpdeploy-ray.service"
RAY = "/var/lib/dpdeploy/envs/cpu-ray/bin/ray"      # where the engine's plan puts the cpu-ray env


@pytest.fixture(scope="module")
def ray_converged(converged, chroot_host):
    """--ray twice as the head (a dedicated user), then once as a worker of a head outside the inventory.

    The densepose role runs `setup --only plan` here, so the cpu-ray env is not built: a stand-in
    `ray` sits where the engine's plan puts it. systemd is not running in the chroot: the units are
    written, never started, and the verify step says so.
    """
    stand_in = chroot_host["rootfs"] / RAY.lstrip("/")
    stand_in.parent.mkdir(parents=True, exist_ok=True)
    stand_in.write_text("#!/bin/sh\necho 'ray stand-in (tests): never started in the chroot'\n")
    stand_in.chmod(0o755)
    unit = chroot_host["rootfs"] / RAY_UNIT
    user = {"ray_cluster_user": "dpdeploy-ray"}
    first = _provision(chroot_host, "--ray", "--extra-vars", json.dumps(user))
    head_unit = unit.read_text() if unit.is_file() else ""
    second = _provision(chroot_host, "--ray", "--extra-vars", json.dumps(user))
    worker = _provision(chroot_host, "--ray", "--extra-vars", json.dumps(
        {**user, "ray_cluster_head_host": "head.example.org", "ray_cluster_num_cpus": "2"}))
    return {"first": first, "second": second, "worker": worker, "head_unit": head_unit,
            "worker_unit": unit.read_text() if unit.is_file() else ""}


@pytest.mark.slow
def test_ray_role_writes_the_heads_unit_from_the_engines_answer(ray_converged):
    rc, summary = ray_converged["first"]
    assert rc == 0 and summary["hosts"][0]["status"] == "changed", summary["output"][-4000:]
    unit = ray_converged["head_unit"]
    # The engine's `ray start` for a head of the cpu-ray env (tests/test_provision.py checks the argv rules).
    assert f"\nExecStart={RAY} start --block --head --port=6379 --include-dashboard=false --num-gpus=0 " \
           "--disable-usage-stats\n" in unit, unit
    assert f"\nExecStop={RAY} stop\n" in unit and "\nRestart=on-failure\n" in unit
    assert "\nUser=dpdeploy-ray\n" in unit and "\nWantedBy=multi-user.target\n" in unit
    for env in ("DPDEPLOY_HOME=/var/lib/dpdeploy", "PYTHONPATH=/opt/dpdeploy", "RAY_USAGE_STATS_ENABLED=0"):
        assert f'\nEnvironment="{env}"\n' in unit
    out = summary["output"]
    assert "systemd is not running on bookworm (a chroot or a container)" in out
    assert "cluster not verified on bookworm: systemd is not running here" in out


@pytest.mark.slow
def test_ray_role_second_converge_changes_nothing(ray_converged):
    rc, summary = ray_converged["second"]
    doc = provision._json_document(summary["output"])
    changed = [t["task"]["name"] for p in doc["plays"] for t in p["tasks"]
               if t["hosts"].get("bookworm", {}).get("changed")]
    assert rc == 0 and [(h["host"], h["changed"], h["failed"]) for h in summary["hosts"]] == [("bookworm", 0, 0)], changed


@pytest.mark.slow
def test_ray_role_makes_a_worker_of_a_head_outside_the_inventory(ray_converged, chroot_host, monkeypatch):
    rc, summary = ray_converged["worker"]
    assert rc == 0 and summary["hosts"][0]["changed"] >= 1, summary["output"][-4000:]
    unit = ray_converged["worker_unit"]
    assert f"\nExecStart={RAY} start --block --address=head.example.org:6379 --num-gpus=0 --num-cpus=2 " \
           "--disable-usage-stats\n" in unit, unit
    assert "--head" not in unit
    # The head checks the cluster, and this host is not the head: no verify output at all.
    assert "cluster not verified" not in summary["output"]
    testinfra = pytest.importorskip("testinfra")
    monkeypatch.setenv("PATH", f"{BIN}:{os.environ['PATH']}")
    host = testinfra.get_host(f"ansible://bookworm?ansible_inventory={chroot_host['inventory']}&force_ansible=true")
    f = host.file("/" + RAY_UNIT)
    assert f.exists and f.user == "root" and f.mode == 0o644
    ray_user = host.user("dpdeploy-ray")
    assert ray_user.exists and ray_user.shell == "/usr/sbin/nologin"


@pytest.mark.slow
def test_injected_gpu_check_mode_plans_the_driver_and_changes_nothing(converged, chroot_host):
    extra = json.dumps({"nvidia_driver_detected_gpus": INJECTED_GPU, "densepose_setup_steps": []})
    argv = provision.playbook_argv(str(ANSIBLE_PLAYBOOK), inventory=chroot_host["inventory"], check=True,
                                   extra_vars=extra)
    env = {**provision.playbook_env(dict(os.environ)), "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
           "ANSIBLE_CALLBACKS_ENABLED": "", "DPDEPLOY_HOME": str(chroot_host["home"])}
    proc = _run(argv, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    # Task names as "role : name"; the last one of a name wins.
    tasks = {t["task"]["name"].split(" : ")[-1]: t["hosts"]["bookworm"]
             for t in out["plays"][0]["tasks"] if "bookworm" in t["hosts"]}
    plan = tasks["Show the NVIDIA driver plan"]["nvidia_driver_plan"]
    assert plan["profile"] == "cu130" and plan["min_driver"] == "580.65.06" and plan["branch"] == "580"
    assert plan["action"] == "install" and plan["installed"] == ""
    # The engine's answer (dpdeploy.plan.driver_install) for an H100 SXM on Debian 12, this kernel.
    assert plan["modules"] == "open" and plan["server"] is True and plan["pin"] == "580.65.06-*"
    assert plan["packages"] == [f"linux-headers-{os.uname().release}", "dkms", "nvidia-driver-cuda",
                                "nvidia-kernel-open-dkms", "nvidia-persistenced"]
    assert plan["repository"]["url"].endswith("/repos/debian12/x86_64/")
    assert plan["fabricmanager"] is False          # the injected PCI view has no NVSwitch
    assert plan["secure_boot"] == {"state": "unknown", "refusal": ""}     # no mokutil in the chroot
    assert tasks["Report the driver packages check mode would install"]["changed"] is True
    install = "Install the NVIDIA driver packages"
    assert install not in tasks or tasks[install].get("skipped")
    rootfs = chroot_host["rootfs"]
    assert not (rootfs / "etc/apt/keyrings/nvidia-cuda.asc").exists()
    assert not list((rootfs / "etc/apt/sources.list.d").glob("nvidia*"))


# --- the nvidia_driver role acts on the engine's answer (no chroot: localhost, check mode) ---

def _driver_role(tmp_path, smi_output, branch=""):
    """The nvidia_driver role in check mode on localhost, with an injected GPU and a fake nvidia-smi."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho '{smi_output}'\n" if smi_output else "#!/bin/sh\nexit 9\n")
    smi.chmod(0o755)
    play = tmp_path / "play.yml"
    play.write_text("- hosts: all\n  gather_facts: true\n  roles: [nvidia_driver]\n")
    extra = json.dumps({"nvidia_driver_detected_gpus": INJECTED_GPU, "nvidia_driver_branch": branch,
                        "nvidia_driver_engine_dir": str(ROOT), "ansible_python_interpreter": sys.executable})
    env = {**provision.playbook_env(dict(os.environ)), "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
           "ANSIBLE_CALLBACKS_ENABLED": "", "ANSIBLE_ROLES_PATH": str(ROOT / "ansible" / "roles"),
           "PATH": f"{bin_dir}:{BIN}:{os.environ['PATH']}"}
    proc = _run([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local", "--check", "-e", extra, str(play)],
                env=env, timeout=300)
    out = json.loads(proc.stdout)
    tasks = {t["task"]["name"].split(" : ")[-1]: t["hosts"]["localhost"]
             for t in out["plays"][0]["tasks"] if "localhost" in t["hosts"]}
    return proc.returncode, tasks


@pytest.mark.parametrize("smi_output", ["535.104.05", "580.65.06", "590.44.01", ""])
def test_driver_role_acts_on_the_engines_answer(tmp_path, matrix, smi_output):
    """The role installs exactly when dpdeploy.plan.driver.new_enough says the driver is too old."""
    from dpdeploy.plan.driver import new_enough

    rc, tasks = _driver_role(tmp_path, smi_output)
    assert rc == 0, tasks
    plan = tasks["Show the NVIDIA driver plan"]["nvidia_driver_plan"]
    floor = matrix.profile(matrix.auto_gpu[0]).min_driver
    fits = bool(smi_output) and new_enough(smi_output, floor)
    assert plan["installed"] == smi_output and plan["min_driver"] == floor
    assert plan["action"] == ("none" if fits else "install"), plan["reason"]
    # Verification runs for a kept driver; in check mode an install has nothing to verify yet.
    verdict = tasks.get("Ask dpdeploy's engine whether the running driver is new enough", {"skipped": True})
    assert verdict.get("skipped", False) is not fits
    assert plan["fabricmanager"] is False and plan["modules"] == "open"
    assert plan["secure_boot"]["state"] == ("unknown" if shutil.which("mokutil") is None else plan["secure_boot"]["state"])


def test_driver_role_refuses_the_series_the_engine_refuses(tmp_path):
    rc, tasks = _driver_role(tmp_path, "", branch="570")
    refused = tasks["Refuse a driver series older than the profile needs"]
    assert rc != 0 and refused.get("failed") and "nvidia_driver_branch=570" in refused["msg"]


# --- check mode on fresh hosts ----------------------------------------------------------------

def _fresh_rootfs(base: Path) -> Path:
    rootfs = base / "rootfs"
    rootfs.mkdir()
    assert _run(["tar", "-C", str(rootfs), "-xf", str(_cached_rootfs())]).returncode == 0
    return rootfs


@pytest.fixture(scope="module")
def fresh_hosts(tmp_path_factory):
    """The example inventory (ansible/inventories/example: its groups and group_vars) with fresh
    bookworm rootfs for hosts: gpu1 has Python only, gpu2 and cpu1 are as debootstrap left them
    (no Python); both GPU hosts show an H100 on their PCI bus (injected)."""
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        pytest.skip("the chroot converge needs root and debootstrap (apt-get install debootstrap)")
    roots = {name: _fresh_rootfs(tmp_path_factory.mktemp(f"fresh-{name}")) for name in ("gpu1", "gpu2", "cpu1")}
    local_cas = Path("/usr/local/share/ca-certificates")
    if local_cas.is_dir():
        shutil.copytree(local_cas, roots["gpu1"] / "usr/local/share/ca-certificates", dirs_exist_ok=True)
    shutil.copy("/etc/resolv.conf", roots["gpu1"] / "etc/resolv.conf")
    made = _run(["chroot", str(roots["gpu1"]), "sh", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
                 "apt-get install -y -qq --no-install-recommends python3 python3-apt >/dev/null"], timeout=900)
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    inventory = tmp_path_factory.mktemp("fresh-inventory") / "example"
    shutil.copytree(ROOT / "ansible" / "inventories" / "example", inventory)
    doc = yaml.safe_load((inventory / "hosts.yml").read_text())
    groups = doc["all"]["children"]["densepose"]["children"]
    hosts = {}
    for group, name in (("gpu_hosts", "gpu1"), ("gpu_hosts", "gpu2"), ("cpu_hosts", "cpu1")):
        fqdn = f"{name}.example.org"
        hosts[fqdn] = {**(groups[group]["hosts"][fqdn] or {}), "ansible_connection": "community.general.chroot",
                       "ansible_host": str(roots[name]), "ansible_become": False, "densepose_setup_steps": STEPS,
                       **({"nvidia_driver_detected_gpus": INJECTED_GPU} if group == "gpu_hosts" else {})}
        groups[group]["hosts"][fqdn] = hosts[fqdn]
    assert set(hosts) == {h for g in groups.values() for h in g["hosts"]}, "the example inventory's hosts changed"
    (inventory / "hosts.yml").write_text(yaml.safe_dump(doc))
    return {"inventory": inventory, "home": inventory.parent / "home", "hosts": hosts}


@pytest.mark.slow
def test_check_mode_on_fresh_hosts_says_what_would_change_and_changes_nothing(fresh_hosts):
    """`invoke provision --check` on the example inventory against fresh hosts (issue 20)."""
    rc, summary = _provision(fresh_hosts, "--check", "--ray")
    assert rc == 0, summary["output"][-4000:]
    assert summary["check"] is True
    assert {h["host"]: h["status"] for h in summary["hosts"]} == dict.fromkeys(fresh_hosts["hosts"], "would change")
    assert all(h["failed"] == 0 and h["unreachable"] == 0 for h in summary["hosts"])
    out = summary["output"]
    for bare in ("gpu2", "cpu1"):
        assert f"{bare}.example.org: would install python3 and python3-apt" in out
    assert "would unpack the project into /opt/dpdeploy" in out            # the host with Python got that far
    # gpu1 (the injected H100): the engine's driver plan, and no CPU deployment on a GPU host.
    assert "nvidia_driver: would install linux-headers-" in out and "(open modules; driver >= 580.65.06), hold them" in out
    assert "gpu1.example.org would be deployed once the NVIDIA driver the nvidia_driver role would install is loaded" in out
    # --ray in check mode: the Ray node is only announced (no project there yet), nothing is verified.
    assert "gpu1.example.org would get dpdeploy-ray.service (a Ray worker of " in out
    assert "cluster not verified on cpu1.example.org: check mode starts nothing" in out
    for host in fresh_hosts["hosts"].values():
        root = Path(host["ansible_host"])
        assert not (root / "opt/dpdeploy").exists()
        assert not (root / "etc/systemd/system/dpdeploy-ray.service").exists()
        assert not list((root / "etc/apt/sources.list.d").glob("nvidia*"))
    for bare in ("gpu2", "cpu1"):
        assert not (Path(fresh_hosts["hosts"][f"{bare}.example.org"]["ansible_host"]) / "usr/bin/python3").exists()
    assert not (Path(fresh_hosts["hosts"]["gpu1.example.org"]["ansible_host"]) / "usr/bin/gcc").exists()
    bundle = Path(summary["bundle"])
    assert bundle.is_file() and bundle.parent == Path(summary["log"]).parent.parent   # once, in the run record


# --- the densepose role never deploys the CPU profile onto a GPU host ---------------------------

@pytest.mark.slow
def test_densepose_refuses_a_cpu_plan_on_a_host_with_nvidia_gpus(converged, chroot_host, tmp_path):
    play = tmp_path / "densepose.yml"
    play.write_text(f"- hosts: all\n  gather_facts: true\n  roles: [{ROOT / 'ansible' / 'roles' / 'densepose'}]\n")
    where = {"densepose_source_dir": str(ROOT), "densepose_reports_dir": str(tmp_path / "reports")}
    extra = json.dumps({**where, "nvidia_driver_gpus": INJECTED_GPU, "densepose_setup_steps": ["plan"]})
    argv = provision.playbook_argv(str(ANSIBLE_PLAYBOOK), inventory=chroot_host["inventory"], playbook=play,
                                   extra_vars=extra)
    proc = _run(argv, env={**provision.playbook_env(dict(os.environ)), "DPDEPLOY_HOME": str(chroot_host["home"])},
                timeout=600)
    [host] = provision.parse_json(proc.stdout)
    assert proc.returncode != 0 and host.status == "failed", proc.stdout[-3000:]
    assert "has 1 NVIDIA GPU(s) on the PCI bus but the engine plans cpu" in host.message
    allowed = json.dumps({**where, "nvidia_driver_gpus": INJECTED_GPU, "densepose_setup_steps": [],
                          "densepose_allow_cpu_on_gpu_host": True})
    argv[-1] = allowed
    ok = _run(argv, env={**provision.playbook_env(dict(os.environ)), "DPDEPLOY_HOME": str(chroot_host["home"])},
              timeout=600)
    assert ok.returncode == 0, ok.stdout[-3000:]


# --- a converge with an injected GPU: the real files the driver role writes ---------------------

STUB_VERSIONS = ("580.65.06-1", "590.44.01-1")     # the pin must pick the first, though the second is newer


def _stub_deb(out: Path, name: str, version: str, files: dict[str, str]) -> Path:
    tree = out / f"{name}_{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: dpdeploy tests <t@example.org>\n"
        f"Description: stand-in for NVIDIA's {name} (tests: no NVIDIA repository here)\n")
    for rel, text in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    deb = out / f"{name}_{version}_all.deb"
    made = _run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)])
    assert made.returncode == 0, made.stderr
    shutil.rmtree(tree)
    return deb


def _stub_repository(rootfs: Path) -> str:
    """A flat apt repository inside the rootfs with stand-ins for the packages the engine plans."""
    repo = rootfs / "srv" / "nvidia-stub"
    repo.mkdir(parents=True)
    unit = "[Unit]\nDescription=stub\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"
    for version in STUB_VERSIONS:
        for name in ("nvidia-driver-cuda", "nvidia-kernel-open-dkms"):
            _stub_deb(repo, name, version, {})
        _stub_deb(repo, "nvidia-persistenced", version, {"lib/systemd/system/nvidia-persistenced.service": unit})
        _stub_deb(repo, "nvidia-fabricmanager-580", version,
                  {"lib/systemd/system/nvidia-fabricmanager.service": unit})
    _stub_deb(repo, f"linux-headers-{os.uname().release}", "1.0", {})
    _stub_deb(repo, "dkms", "99.0", {})
    scan = _run(["dpkg-scanpackages", "--multiversion", "."], cwd=repo)
    assert scan.returncode == 0, scan.stderr
    (repo / "Packages").write_text(scan.stdout)
    return "deb [trusted=yes] file:/srv/nvidia-stub ./"


@pytest.mark.slow
def test_injected_gpu_converge_pins_holds_blacklists_and_stops_for_the_pending_reboot(converged, chroot_host):
    rootfs = chroot_host["rootfs"]
    source = _stub_repository(rootfs)
    extra = json.dumps({"nvidia_driver_detected_gpus": INJECTED_GPU,
                        "nvidia_driver_detected_nvswitches": [{"slot": "0000:07:00.0", "device": "0x22a3",
                                                               "class": "0x068000"}],
                        "nvidia_driver_apt_source": source})
    rc, summary = _provision(chroot_host, "--extra-vars", extra)
    [host] = summary["hosts"]
    assert rc == 1 and host["status"] == "failed", summary["output"][-4000:]
    assert "reboot pending on bookworm" in host["message"] and "Not deploying DensePose" in host["message"]

    def chroot(*cmd):
        proc = _run(["chroot", str(rootfs), *cmd])
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    pin = (rootfs / "etc/apt/preferences.d/dpdeploy-nvidia-driver").read_text()
    assert "Pin: version 580.65.06-*" in pin and "Pin-Priority: 1001" in pin
    assert "nvidia-driver-cuda nvidia-kernel-open-dkms nvidia-persistenced nvidia-fabricmanager-580" in pin
    versions = dict(line.split() for line in chroot(
        "dpkg-query", "-W", "-f=${Package} ${Version}\\n", "nvidia-driver-cuda", "nvidia-kernel-open-dkms",
        "nvidia-persistenced", "nvidia-fabricmanager-580", f"linux-headers-{os.uname().release}").splitlines())
    assert versions == {"nvidia-driver-cuda": "580.65.06-1", "nvidia-kernel-open-dkms": "580.65.06-1",
                        "nvidia-persistenced": "580.65.06-1", "nvidia-fabricmanager-580": "580.65.06-1",
                        f"linux-headers-{os.uname().release}": "1.0"}      # the running kernel's headers
    held = {line.split()[0] for line in chroot("dpkg", "--get-selections").splitlines() if line.split()[1] == "hold"}
    assert held == {"nvidia-driver-cuda", "nvidia-kernel-open-dkms", "nvidia-persistenced", "nvidia-fabricmanager-580"}
    assert (rootfs / "etc/modprobe.d/blacklist-nouveau.conf").read_text().endswith(
        "blacklist nouveau\noptions nouveau modeset=0\n")
    for unit in ("nvidia-persistenced", "nvidia-fabricmanager"):
        assert (rootfs / f"lib/systemd/system/{unit}.service").is_file()
    # An upgrade does not move the held, pinned driver to the newer version in the repository.
    chroot("apt-get", "-qq", "-o", "Dpkg::Use-Pty=0", "upgrade", "-y")
    assert chroot("dpkg-query", "-W", "-f=${Version}", "nvidia-driver-cuda") == "580.65.06-1"
    # The host stopped there: no task of the densepose role ran on it.
    doc = provision._json_document(summary["output"])
    ran = [t["task"]["name"] for p in doc["plays"] for t in p["tasks"] if "bookworm" in t["hosts"]]
    assert ran[-1].endswith("Stop this host while its reboot is pending")
    assert not [n for n in ran if n.startswith("densepose")]
