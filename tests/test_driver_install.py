"""The driver installation rule (dpdeploy.plan.driver_install), per GPU family, from the facts fixtures
and from the PCI view the nvidia_driver role gives it (env/nvidia-driver.yml is its data)."""
import json
import subprocess
import sys

import pytest

from dpdeploy.plan import driver_install as rule

from .conftest import FIXTURES, ROOT, facts_fixture


@pytest.fixture(scope="module")
def rules():
    return rule.load()


def _decide(rules, matrix, name, request=None, **changes):
    return rule.decide(rules, matrix, rule.host_from_facts(facts_fixture(name, **changes)), request or rule.Request())


def _pci_host(*devices, nvswitches=0, machine="x86_64", os="Debian-12", installed="", secure_boot=None):
    return rule.HostView(gpus=tuple(rule.GpuView(device=d) for d in devices), machine=machine,
                         kernel="6.1.0-18-amd64", os=os, nvswitches=nvswitches, installed=installed,
                         secure_boot=secure_boot)


def test_blackwell_gets_the_open_modules_and_cannot_get_the_proprietary_ones(rules, matrix):
    got = _decide(rules, matrix, "rtx5090")
    assert got["modules"] == "open" and "requires the open kernel modules" in got["modules_reason"]
    assert got["gpus"][0]["family"] == "blackwell" and not got["server"]
    with pytest.raises(rule.DriverRuleError, match="open kernel modules are required"):
        _decide(rules, matrix, "rtx5090", rule.Request(modules="proprietary"))
    # A compute capability newer than every row of the table: open too.
    newer = _decide(rules, matrix, "rtx5090", gpus=[{"index": 0, "name": "NVIDIA Next", "compute_capability": "13.0",
                                                     "memory_mib": 1}])
    assert newer["modules"] == "open" and newer["gpus"][0]["family"] == "newer"


def test_volta_gets_the_proprietary_modules_and_turing_to_hopper_take_open(rules, matrix):
    v100 = _decide(rules, matrix, "v100")
    assert v100["modules"] == "proprietary" and "pre-Turing" in v100["modules_reason"]
    assert "nvidia-headless-580-server" in v100["driver_packages"]
    with pytest.raises(rule.DriverRuleError, match="do not support it"):
        _decide(rules, matrix, "v100", rule.Request(modules="open"))
    for name in ("t4", "a100", "rtx4090", "h100"):
        assert _decide(rules, matrix, name)["modules"] == "open", name
    assert _decide(rules, matrix, "t4", rule.Request(modules="proprietary"))["modules"] == "proprietary"


def test_one_host_cannot_mix_open_only_and_proprietary_only_gpus(rules, matrix):
    gpus = [{"index": 0, "name": "Tesla V100-SXM2-16GB", "compute_capability": "7.0", "memory_mib": 1},
            {"index": 1, "name": "NVIDIA GeForce RTX 5090", "compute_capability": "12.0", "memory_mib": 1}]
    with pytest.raises(rule.DriverRuleError, match="split these GPUs across hosts"):
        _decide(rules, matrix, "v100", gpus=gpus)


def test_datacenter_gpus_get_the_headless_server_packages(rules, matrix):
    t4 = _decide(rules, matrix, "t4")
    assert t4["server"] is True and "headless" in t4["packages_reason"]
    assert t4["driver_packages"] == ["nvidia-headless-580-server-open", "nvidia-utils-580-server",
                                     "nvidia-compute-utils-580-server"]
    desk = _decide(rules, matrix, "rtx4090")
    assert desk["server"] is False and desk["driver_packages"] == ["nvidia-driver-580-open"]
    # Debian: NVIDIA's compute-only packages for a datacenter GPU.
    deb = rule.decide(rules, matrix, _pci_host("0x1eb8"))
    assert deb["driver_packages"] == ["nvidia-driver-cuda", "nvidia-kernel-open-dkms", "nvidia-persistenced"]


def test_aarch64_uses_the_sbsa_repository_and_x86_64_its_own(rules, matrix):
    arm = _decide(rules, matrix, "aarch64")
    assert arm["repository"]["url"] == "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/sbsa/"
    assert arm["repository"]["keyring_url"].endswith("/ubuntu2204/sbsa/cuda-keyring_1.1-1_all.deb")
    x86 = _decide(rules, matrix, "h100")
    assert x86["repository"]["url"].endswith("/repos/ubuntu2404/x86_64/")
    with pytest.raises(rule.DriverRuleError, match="machine ppc64le"):
        _decide(rules, matrix, "h100", machine="ppc64le")


def test_h100_sxm_gets_the_fabric_manager_at_the_drivers_exact_version(rules, matrix):
    got = _decide(rules, matrix, "h100")          # --facts: no PCI view, the SXM module decides
    assert got["fabricmanager"] is True and "SXM module" in got["fabricmanager_reason"]
    assert got["fabricmanager_packages"] == ["nvidia-fabricmanager-580"]
    assert got["fabricmanager_version"] == "580.95.05" == got["installed"]     # the driver that runs
    assert "nvidia-fabricmanager" in got["services"] and "nvidia-fabricmanager-580" in got["hold"]
    assert not _decide(rules, matrix, "t4")["fabricmanager"]
    assert not _decide(rules, matrix, "rtx4090")["fabricmanager"]


def test_the_pci_view_of_nvswitches_decides_the_fabric_manager(rules, matrix):
    hgx = rule.decide(rules, matrix, _pci_host(*["0x2330"] * 8, nvswitches=4))
    assert hgx["fabricmanager"] is True and "4 NVSwitch chips" in hgx["fabricmanager_reason"]
    assert hgx["fabricmanager_version"] == "580.65.06" == hgx["version"]         # installed now: the pin
    four_gpu_board = rule.decide(rules, matrix, _pci_host(*["0x2330"] * 4, nvswitches=0))
    assert four_gpu_board["fabricmanager"] is False and four_gpu_board["services"] == ["nvidia-persistenced"]
    b200 = rule.decide(rules, matrix, _pci_host("0x2901", nvswitches=2))
    assert b200["modules"] == "open" and b200["fabricmanager"] and b200["server"]


def test_an_install_pins_the_exact_version_and_holds_the_packages(rules, matrix):
    fresh = rule.decide(rules, matrix, _pci_host("0x2330", nvswitches=0))
    assert fresh["action"] == "install" and fresh["version"] == matrix.profile("cu130").min_driver
    assert fresh["pin"] == f"{fresh['version']}-*" and fresh["hold"] == fresh["driver_packages"]
    assert fresh["prerequisites"] == ["linux-headers-6.1.0-18-amd64", "dkms"]       # the running kernel's
    assert fresh["nouveau_blacklist"].startswith("blacklist nouveau\n")
    newer = rule.decide(rules, matrix, _pci_host("0x2330"), rule.Request(version="590.44.01"))
    assert newer["branch"] == "590" and newer["pin"] == "590.44.01-*"
    assert "nvidia-driver-cuda" in newer["driver_packages"]
    with pytest.raises(rule.DriverRuleError, match="older than the 580.65.06"):
        rule.decide(rules, matrix, _pci_host("0x2330"), rule.Request(version="580.9.1"))
    with pytest.raises(rule.DriverRuleError, match="not of the 590 series"):
        rule.decide(rules, matrix, _pci_host("0x2330"), rule.Request(version="580.95.05", branch="590"))
    old = rule.decide(rules, matrix, _pci_host("0x2330", installed="535.104.05"))
    assert old["action"] == "install" and old["version"] == "580.65.06"


def test_secure_boot_refuses_unsigned_modules_with_signing_instructions(rules, matrix):
    on = rule.decide(rules, matrix, _pci_host("0x2330", secure_boot=True))["secure_boot"]
    assert on["state"] == "enabled" and "mokutil --import" in on["refusal"]
    signed = rule.decide(rules, matrix, _pci_host("0x2330", secure_boot=True), rule.Request(secure_boot_signing=True))
    assert signed["secure_boot"]["refusal"] == ""
    assert rule.decide(rules, matrix, _pci_host("0x2330", secure_boot=False))["secure_boot"] == {
        "state": "disabled", "refusal": ""}


@pytest.mark.parametrize("given, state", [("enabled", True), ("disabled", False), ("unknown", None), ("", None),
                                          (True, True), (False, False), (None, None)])
def test_secure_boot_state_as_the_role_sends_it(given, state):
    host = rule.host_from_dict({"gpus": [{"device": "0x2330"}], "machine": "x86_64", "kernel": "6.1.0-18-amd64",
                                "os": "Debian-12", "secure_boot": given, "nvswitches": "0"})
    assert host.secure_boot is state and host.nvswitches == 0


def test_container_toolkit_only_when_asked(rules, matrix):
    assert _decide(rules, matrix, "t4")["container_toolkit"] is None
    ctk = _decide(rules, matrix, "t4", rule.Request(container_toolkit=True))["container_toolkit"]
    assert ctk["packages"] == ["nvidia-container-toolkit"] and "libnvidia-container" in ctk["repository"]


def test_the_table_is_consistent(rules):
    seen = {}
    for m in rules.models:
        assert m.family in rules.families and m.pci, m
        for pci in m.pci:
            assert pci not in seen, f"{pci} in {seen.get(pci)} and {m.model}"
            seen[pci] = m.model
    assert not set(seen) & set(rules.nvswitch_pci)
    ccs = [c for ccs, _ in rules.families.values() for c in ccs]
    assert len(ccs) == len(set(ccs))


def test_command_line_answers_json_and_refuses_in_one_line(tmp_path):
    host = json.dumps({"gpus": [{"device": "0x2b85"}], "nvswitches": 0, "machine": "aarch64",
                       "kernel": "6.8.0-1012-nvidia", "os": "Ubuntu-24.04"})
    ok = subprocess.run([sys.executable, "-m", "dpdeploy.plan.driver_install", "--host", host], cwd=ROOT,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    got = json.loads(ok.stdout)
    assert got["modules"] == "open" and got["repository"]["arch"] == "sbsa"
    assert got["prerequisites"][0] == "linux-headers-6.8.0-1012-nvidia"
    facts = subprocess.run([sys.executable, "-m", "dpdeploy.plan.driver_install", "--facts",
                            str(FIXTURES / "facts" / "v100.json")], cwd=ROOT, capture_output=True, text=True)
    assert facts.returncode == 0 and json.loads(facts.stdout)["modules"] == "proprietary"
    bad = subprocess.run([sys.executable, "-m", "dpdeploy.plan.driver_install", "--host", host, "--modules",
                          "proprietary"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    nogpu = subprocess.run([sys.executable, "-m", "dpdeploy.plan.driver_install", "--facts",
                            str(FIXTURES / "facts" / "nogpu.json")], cwd=ROOT, capture_output=True, text=True)
    assert nogpu.returncode == 2 and "no NVIDIA GPU" in nogpu.stderr
