"""The air-gapped round trip, for real: `invoke bundle --profile host` from this machine's lock, the
shared detectron2 tarball and a generated checkpoint, then `invoke setup --offline --bundle` into a
fresh state root over the deployed env's torch (standing in for a host's), with pip's index off and
every Python process refusing any socket that leaves loopback (an audit hook in sitecustomize), and,
where the kernel allows it (root here, CI), the whole process tree in a network namespace of its own
that has only loopback (`unshare -n`): compilers, git and tar cannot reach anything either."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dpdeploy.build.source import kind_of
from dpdeploy.records import env_stamp

from .conftest import D2_SOURCE, ROOT

pytestmark = pytest.mark.slow

# Loaded by every Python process of the offline setup (PYTHONPATH): notes that it ran, and refuses
# and logs any connect / name lookup that is not loopback.
NETGUARD = '''
import ipaddress, os, socket, sys
_LOG = os.environ["NETGUARD_LOG"]

def _note(line):
    with open(_LOG, "a") as fh:
        fh.write(line + "\\n")

def _loopback(host):
    if host in (None, "", "localhost") or str(host).endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False

def _hook(event, args):
    if event == "socket.connect" and args[0].family in (socket.AF_INET, socket.AF_INET6):
        host = args[1][0]
    elif event == "socket.getaddrinfo":
        host = args[0]
    else:
        return
    if not _loopback(host):
        _note(f"BLOCKED {event} {host!r} pid {os.getpid()} {sys.argv[:3]}")
        raise OSError(f"netguard: no network in an offline setup ({host!r})")

sys.addaudithook(_hook)
_note(f"guard {os.getpid()} {sys.executable}")
'''


def run_invoke(*args: str, home: Path, extra: dict, timeout: float = 3600,
               wrap: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "DPDEPLOY_HOME": str(home), **extra}
    return subprocess.run([*wrap, sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=timeout)


# A network namespace with loopback only: `unshare -n` (util-linux; needs root or user namespaces).
NO_NETWORK = ("unshare", "-n", "--", "sh", "-c", 'ip link set lo up 2>/dev/null; exec "$@"', "sh")


def no_network_wrapper() -> tuple[str, ...]:
    """NO_NETWORK where it works here, after checking that a connection out of it fails."""
    probe = subprocess.run([*NO_NETWORK, sys.executable, "-c",
                            "import socket; socket.create_connection(('192.0.2.1', 80), 1)"],
                           capture_output=True, text=True)
    if "unshare" in probe.stderr or probe.returncode == 0:   # cannot make one (or it leaked): the hook alone
        return ()
    assert "Network is unreachable" in probe.stderr, probe.stderr
    return NO_NETWORK


def snapshot(python: Path) -> dict:
    """What the host env holds at its top level (name -> size, mtime): a change to it shows here."""
    found = subprocess.run([str(python), "-c", "import site, json; print(json.dumps(site.getsitepackages()))"],
                           capture_output=True, text=True, check=True)
    out = {}
    for folder in map(Path, json.loads(found.stdout)):
        for entry in folder.iterdir():
            st = entry.stat()
            out[str(entry)] = (st.st_size, st.st_mtime_ns)
    return out


def test_bundle_then_offline_setup_over_the_host_torch(d2_env, tmp_path):
    if not D2_SOURCE or kind_of(D2_SOURCE) != "archive":
        pytest.skip("needs DPDEPLOY_TEST_D2_SOURCE as an archive (the bundle carries the source archive)")
    host = d2_env / "bin" / "python"
    before = snapshot(host)
    checkpoint = tmp_path / "generated.pkl"
    checkpoint.write_bytes(os.urandom(4096))   # not a model the matrix pins: imported only if trusted
    bundle = tmp_path / "host.tar"
    made = run_invoke("bundle", "--profile", "host", "--out", str(bundle), "--source", D2_SOURCE,
                      "--weights", str(checkpoint), home=tmp_path / "connected", extra={})
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]

    guard = tmp_path / "netguard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NETGUARD)
    log = tmp_path / "net.log"
    tried = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection(('192.0.2.1', 80), 1)"],
                           env={**os.environ, "PYTHONPATH": str(guard), "NETGUARD_LOG": str(tmp_path / "probe.log")},
                           capture_output=True, text=True)
    assert tried.returncode != 0 and "BLOCKED" in (tmp_path / "probe.log").read_text(), "the guard must refuse"
    home = tmp_path / "airgapped"
    offline = {"PYTHONPATH": str(guard), "NETGUARD_LOG": str(log), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "",
               "PIP_EXTRA_INDEX_URL": "", "PIP_INDEX_URL": "http://192.0.2.1/unreachable"}
    wrap = no_network_wrapper()
    if os.environ.get("CI") and os.geteuid() == 0:
        assert wrap, "CI runs as root: the offline setup must run without a network namespace's way out"
    done = run_invoke("setup", "--offline", "--bundle", str(bundle), "--profile", "host", "--python", str(host),
                      home=home, extra=offline, wrap=wrap)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    lines = log.read_text().splitlines()
    assert not [x for x in lines if x.startswith("BLOCKED")], "\n".join(lines)
    assert sum(x.startswith("guard ") for x in lines) >= 5, "the guard must have run in the setup's processes"

    [run] = (home / "runs").iterdir()
    env_log = (run / "logs" / "env.log").read_text()
    assert "--no-index --find-links" in done.stdout and f"Looking in links: {home}/bundles/" in env_log
    assert "Collecting torch" not in env_log and "torch-" not in env_log
    steps = {s["name"]: s for s in json.loads((run / "steps.json").read_text())}
    assert steps["smoke"]["status"] == "done", steps["smoke"].get("output", "")[-3000:]
    assert steps["weights"]["status"] == "skipped"   # the generated file is not trusted on its own
    stamp = env_stamp.read(home / "envs" / "host")
    assert stamp.host_python == str(host) and len(stamp.bundle) == 64
    assert snapshot(host) == before, "the host env must not be modified"
