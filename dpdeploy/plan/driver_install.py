"""How a GPU host gets its NVIDIA driver: the one home of that rule, a pure function of what the host is.

Given the GPUs (PCI device IDs before any driver, or names and compute capabilities from --facts),
the NVSwitches on the PCI bus, the machine, the running kernel, the OS and the Secure Boot state,
``decide`` answers: open or proprietary kernel modules, server (headless) or desktop packages,
the CUDA repository folder (x86_64 or sbsa) and its ``cuda-keyring``, the running kernel's
headers, the exact driver version to pin and hold, the nouveau blacklist, the fabric manager at
the driver's version on NVSwitch systems, persistenced, the container toolkit, and whether Secure
Boot refuses the install. The data (and where each fact comes from) is ``env/nvidia-driver.yml``;
the driver floor is ``dpdeploy.plan.driver`` (``env/matrix.yml``).

Ansible's nvidia_driver role asks on the controller and acts on the JSON answer:

    python3 -m dpdeploy.plan.driver_install --host '{"gpus": [{"device": "0x2330"}], "nvswitches": 4,
        "machine": "x86_64", "kernel": "6.1.0-18-amd64", "os": "Debian-12"}'
    python3 -m dpdeploy.plan.driver_install --facts tests/fixtures/facts/t4.json
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from dpdeploy import paths
from dpdeploy.plan import driver, matrix as matrix_mod
from dpdeploy.plan.matrix import MatrixError, read_yaml, version_tuple

DATA_PATH = paths.ROOT / "env" / "nvidia-driver.yml"
MODULES = ("open", "open-ok", "proprietary")
NOUVEAU_BLACKLIST = "blacklist nouveau\noptions nouveau modeset=0\n"


class DriverRuleError(ValueError):
    """A host the rule cannot serve (or a request it refuses): one line saying why and what next."""


@dataclass(frozen=True)
class Model:
    model: str
    family: str
    pci: tuple[str, ...]
    names: tuple[str, ...]
    datacenter: bool = False
    nvswitch_board: bool = False
    modules: str = ""            # overrides the family's (Grace Hopper)


@dataclass(frozen=True)
class Rules:
    families: dict[str, tuple[tuple[str, ...], str]]   # family -> (compute capabilities, modules)
    newer_than_table: str
    models: tuple[Model, ...]
    nvswitch_pci: tuple[str, ...]
    repository: dict[str, Any]
    packages: dict[str, Any]
    container_toolkit: dict[str, Any]

    def model_for(self, gpu: "GpuView") -> Optional[Model]:
        for m in self.models:
            if gpu.device and gpu.device in m.pci:
                return m
            if gpu.name and any(n.lower() in gpu.name.lower() for n in m.names):
                return m
        return None

    def family_of_cc(self, cc: str) -> Optional[str]:
        for name, (ccs, _) in self.families.items():
            if cc in ccs:
                return name
        return None


def load(path: str | Path = DATA_PATH) -> Rules:
    data = read_yaml(path, DriverRuleError, "NVIDIA driver rules")
    if not isinstance(data, dict) or data.get("schema") != 1:
        raise DriverRuleError(f"{path}: expected a mapping with schema: 1")
    try:
        families = {name: (tuple(str(c) for c in row["cc"]), row["modules"]) for name, row in data["families"].items()}
        models = tuple(Model(model=row["model"], family=row["family"], pci=tuple(p.lower() for p in row["pci"]),
                             names=tuple(row["names"]), datacenter=bool(row.get("datacenter", False)),
                             nvswitch_board=bool(row.get("nvswitch_board", False)), modules=row.get("modules", ""))
                       for row in data["models"])
        rules = Rules(families=families, newer_than_table=data["newer_than_table"], models=models,
                      nvswitch_pci=tuple(p.lower() for p in data["nvswitch_pci"]), repository=data["repository"],
                      packages=data["packages"], container_toolkit=data["container_toolkit"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise DriverRuleError(f"{path}: malformed entry ({exc!r}); next: compare it with the comments there") from None
    for name, (_, modules) in families.items():
        if modules not in MODULES:
            raise DriverRuleError(f"{path}: family {name}: modules {modules!r} is not one of {', '.join(MODULES)}")
    for m in models:
        if m.family not in families:
            raise DriverRuleError(f"{path}: model {m.model}: unknown family {m.family!r}")
    return rules


@dataclass(frozen=True)
class GpuView:
    """One GPU as the host shows it: a PCI device ID (sysfs, before a driver) and/or NVML's name and CC."""

    device: str = ""             # "0x2330"
    name: str = ""               # "NVIDIA H100 80GB HBM3"
    compute_capability: str = ""  # "9.0"


@dataclass(frozen=True)
class HostView:
    gpus: tuple[GpuView, ...]
    machine: str                         # uname -m
    kernel: str                          # uname -r
    os: str                              # "Debian-12", "Ubuntu-24.04"
    nvswitches: Optional[int] = None     # NVSwitch chips on the PCI bus; None = no PCI view (--facts)
    secure_boot: Optional[bool] = None   # mokutil --sb-state; None = unknown (no mokutil / no EFI)
    installed: str = ""                  # the installed driver ("" = none)


@dataclass(frozen=True)
class Request:
    """What the operator asked for (the role's variables)."""

    profile: str = "auto"
    version: str = ""                    # exact driver version; "" = the profile's floor
    branch: str = ""                     # driver series; "" = the version's
    modules: str = "auto"                # auto | open | proprietary
    container_toolkit: bool = False
    secure_boot_signing: bool = False    # a MOK is enrolled and DKMS signs with it


def host_from_facts(facts: Any) -> HostView:
    """The rule's view of a ``Facts`` (no PCI view: NVSwitches unknown, Secure Boot unknown)."""
    os_key = f"{facts.os_id.capitalize()}-{facts.os_version}"
    return HostView(gpus=tuple(GpuView(name=g.name, compute_capability=g.compute_capability) for g in facts.gpus),
                    machine=facts.machine, kernel=facts.kernel, os=os_key, installed=facts.driver_version or "")


def _secure_boot_state(value: Any) -> Optional[bool]:
    """true/"enabled" -> True, false/"disabled" -> False, anything else (None, "unknown", "") -> None."""
    if isinstance(value, bool) or value is None:
        return value
    return {"enabled": True, "true": True, "disabled": False, "false": False}.get(str(value).strip().lower())


def host_from_dict(data: dict[str, Any]) -> HostView:
    """The rule's view from the role's JSON (the nvidia_pci_gpus module's lists and ansible facts)."""
    try:
        gpus = tuple(GpuView(device=str(g.get("device", "")).lower(), name=str(g.get("name", "")),
                             compute_capability=str(g.get("compute_capability", ""))) for g in data.get("gpus", []))
        nvswitches = data.get("nvswitches")
        secure_boot = data.get("secure_boot")
        return HostView(gpus=gpus, machine=str(data["machine"]), kernel=str(data["kernel"]), os=str(data["os"]),
                        nvswitches=None if nvswitches is None else int(nvswitches),
                        secure_boot=_secure_boot_state(secure_boot),
                        installed=str(data.get("installed") or ""))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DriverRuleError(f"host description: {exc!r} (needs gpus, machine, kernel, os)") from None


@dataclass
class _Gpu:
    view: GpuView
    model: str
    family: str
    modules: str
    datacenter: bool
    nvswitch_board: bool
    why: str = field(default="")


def _classify(rules: Rules, gpu: GpuView) -> _Gpu:
    known = rules.model_for(gpu)
    family = rules.family_of_cc(gpu.compute_capability) if gpu.compute_capability else None
    family = family or (known.family if known else None)
    label = gpu.name or (known.model if known else "") or f"PCI device {gpu.device or '?'}"
    if family is None and gpu.compute_capability:
        newest = max((version_tuple(c) for ccs, _ in rules.families.values() for c in ccs))
        if version_tuple(gpu.compute_capability) > newest:
            return _Gpu(gpu, label, "newer", rules.newer_than_table, False, False,
                        f"{label}: compute capability {gpu.compute_capability} is newer than the table")
    if family is None:
        # An unknown device: NVIDIA's default (open) fits every GPU since Turing.
        return _Gpu(gpu, label, "unknown", "open-ok", False, False,
                    f"{label}: not in env/nvidia-driver.yml; open modules are NVIDIA's default since R560 "
                    "(set nvidia_driver_modules: proprietary for a pre-Turing GPU)")
    modules = (known.modules if known and known.modules else "") or rules.families[family][1]
    return _Gpu(gpu, known.model if known else label, family, modules,
                bool(known and known.datacenter), bool(known and known.nvswitch_board), f"{label}: {family} ({modules})")


def _modules(gpus: list[_Gpu], asked: str) -> tuple[str, str]:
    """(open|proprietary, why) for all the GPUs of one host (one kernel module serves them all)."""
    need_open = [g for g in gpus if g.modules == "open"]
    need_prop = [g for g in gpus if g.modules == "proprietary"]
    if need_open and need_prop:
        raise DriverRuleError(
            f"no single NVIDIA kernel module drives both {need_open[0].model} (open modules only) and "
            f"{need_prop[0].model} (proprietary only); next: split these GPUs across hosts")
    if asked not in ("auto", "open", "proprietary"):
        raise DriverRuleError(f"nvidia_driver_modules={asked!r}: choose auto, open or proprietary")
    if need_open:
        if asked == "proprietary":
            raise DriverRuleError(f"nvidia_driver_modules=proprietary cannot drive {need_open[0].model}: NVIDIA's "
                                  "open kernel modules are required there; next: set it to auto or open")
        return "open", f"{need_open[0].model} requires the open kernel modules"
    if need_prop:
        if asked == "open":
            raise DriverRuleError(f"nvidia_driver_modules=open cannot drive {need_prop[0].model} (pre-Turing): "
                                  "the open kernel modules do not support it; next: set it to auto or proprietary")
        return "proprietary", f"{need_prop[0].model} is pre-Turing: only the proprietary modules drive it"
    if asked == "proprietary":
        return "proprietary", "asked for (nvidia_driver_modules); these GPUs support both"
    return "open", "Turing or newer: open kernel modules, NVIDIA's default since R560"


def _secure_boot(host: HostView, request: Request) -> dict[str, Any]:
    state = {None: "unknown", True: "enabled", False: "disabled"}[host.secure_boot]
    refusal = ""
    if host.secure_boot and not request.secure_boot_signing:
        refusal = ("Secure Boot is enabled and the NVIDIA modules DKMS builds would be unsigned, so the kernel "
                   "would refuse to load them; next: enroll DKMS's signing key (sudo mokutil --import "
                   "/var/lib/dkms/mok.pub, reboot, confirm the key in MokManager), then set "
                   "nvidia_driver_secure_boot_signing: true; or disable Secure Boot in the firmware")
    return {"state": state, "refusal": refusal}


def decide(rules: Rules, matrix: matrix_mod.Matrix, host: HostView, request: Optional[Request] = None) -> dict[str, Any]:
    """The driver installation for ``host``: every choice with its reason (JSON-ready)."""
    request = request or Request()
    if not host.gpus:
        raise DriverRuleError("this host has no NVIDIA GPU: it needs no NVIDIA driver")
    distro_family = host.os.split("-")[0]
    distro = rules.repository["distros"].get(host.os)
    arch = rules.repository["arch"].get(host.machine)
    if distro is None or distro_family not in rules.packages:
        raise DriverRuleError(f"NVIDIA's repository has no entry for {host.os} in env/nvidia-driver.yml "
                              f"(known: {', '.join(rules.repository['distros'])}); next: use one of those")
    if arch is None:
        raise DriverRuleError(f"no NVIDIA driver repository folder for machine {host.machine} "
                              f"(known: {', '.join(rules.repository['arch'])})")
    if not host.kernel:
        raise DriverRuleError("the running kernel release (uname -r) is unknown: its headers cannot be named")

    version = request.version
    if version and not version_tuple(version):
        raise DriverRuleError(f"driver version {version!r} is not a version like 580.95.05")
    branch = request.branch or (str(version_tuple(version)[0]) if version else "")
    need = driver.requirement(matrix, request.profile, installed=host.installed, branch=branch or None)
    if version and str(version_tuple(version)[0]) != str(need["branch"]):
        raise DriverRuleError(f"driver version {version} is not of the {need['branch']} series asked for")
    if version and not driver.new_enough(version, need["min_driver"]):
        raise DriverRuleError(f"driver version {version} is older than the {need['min_driver']} that "
                              f"{need['profile']} (CUDA {need['cuda']}) needs; next: raise nvidia_driver_version")
    install = not need["ok"]
    if not version and not install:
        version = host.installed              # a driver new enough is kept: pin and hold what runs
    elif not version and not request.branch:
        version = need["min_driver"]          # the floor itself: a released driver (matrix source)
    # The fabric manager must match the driver that runs: the installed one when it is kept.
    running = version
    pin = f"{version}-*" if version else f"{need['branch']}.*"

    gpus = [_classify(rules, g) for g in host.gpus]
    modules, modules_why = _modules(gpus, request.modules)
    server = any(g.datacenter for g in gpus)
    series = str(need["branch"])
    pkgs = rules.packages[distro_family]
    flavour = pkgs["server" if server else "desktop"][modules]
    driver_packages = [p.replace("{branch}", series) for p in flavour]
    prerequisites = [p.replace("{kernel}", host.kernel) for p in rules.packages["prerequisites"]]

    if host.nvswitches is not None:
        fabric = host.nvswitches > 0
        fabric_why = (f"{host.nvswitches} NVSwitch chips on the PCI bus: CUDA does not initialise without "
                      "nvidia-fabricmanager at the driver's exact version" if fabric else
                      "no NVSwitch on the PCI bus: no fabric manager")
    else:
        boards = [g for g in gpus if g.nvswitch_board]
        fabric = bool(boards)
        fabric_why = (f"{boards[0].model} is an SXM module of NVSwitch (HGX/DGX) baseboards: fabric manager at the "
                      "driver's exact version (on the host, the PCI view of the NVSwitches decides)" if fabric else
                      "no NVSwitch-board GPU: no fabric manager")
    fabric_packages = [p.replace("{branch}", series) for p in pkgs["fabricmanager"]] if fabric else []
    fm_version = running.split("-")[0] if running else ""

    repo = f"{rules.repository['base']}/{distro}/{arch}/"
    ctk = rules.container_toolkit
    services = ["nvidia-persistenced"] + (["nvidia-fabricmanager"] if fabric else [])
    return {
        "profile": need["profile"], "cuda": need["cuda"], "min_driver": need["min_driver"],
        "installed": host.installed, "ok": need["ok"], "reason": need["reason"],
        "action": "install" if install else "none",
        "branch": series, "branch_ok": need["branch_ok"],
        "version": version, "pin": pin,
        "modules": modules, "modules_reason": modules_why,
        "server": server,
        "packages_reason": ("datacenter GPU: headless server packages (no X)" if server else
                            "no datacenter GPU: the desktop driver packages"),
        "gpus": [{"model": g.model, "family": g.family, "modules": g.modules, "datacenter": g.datacenter,
                  "device": g.view.device, "why": g.why} for g in gpus],
        "repository": {"url": repo, "distro": distro, "arch": arch,
                       "keyring_url": repo + rules.repository["keyring"], "keyring": rules.repository["keyring"]},
        "prerequisites": prerequisites,
        "driver_packages": driver_packages,
        "packages": prerequisites + driver_packages,
        "hold": driver_packages + fabric_packages,
        "fabricmanager": fabric, "fabricmanager_reason": fabric_why,
        "fabricmanager_packages": fabric_packages, "fabricmanager_version": fm_version,
        "services": services,
        "nouveau_blacklist": NOUVEAU_BLACKLIST,
        "secure_boot": _secure_boot(host, request),
        "container_toolkit": ({"repository": ctk["repository"], "key_url": ctk["key_url"],
                               "packages": list(ctk["packages"])} if request.container_toolkit else None),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m dpdeploy.plan.driver_install", description=__doc__.splitlines()[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--host", help="the host as JSON: gpus [{device|name, compute_capability}], nvswitches, "
                                    "machine, kernel, os (Debian-12, Ubuntu-24.04), secure_boot, installed")
    src.add_argument("--facts", help="a facts file (invoke facts --json): GPUs by name, no PCI view")
    parser.add_argument("--profile", default="auto", help="the CUDA profile whose driver floor applies")
    parser.add_argument("--version", default="", help="exact driver version to pin (default: the profile's floor)")
    parser.add_argument("--branch", default="", help="driver series (default: the version's)")
    parser.add_argument("--modules", default="auto", choices=("auto", "open", "proprietary"), help="kernel modules")
    parser.add_argument("--container-toolkit", action="store_true", help="also the NVIDIA Container Toolkit")
    parser.add_argument("--secure-boot-signing", action="store_true",
                        help="a MOK is enrolled and DKMS signs the modules with it")
    args = parser.parse_args(argv)
    try:
        if args.facts:
            from dpdeploy.host.facts import Facts   # lower layer; only the command line needs it
            host = host_from_facts(Facts.load(args.facts))
        else:
            try:
                data = json.loads(args.host)
            except json.JSONDecodeError as exc:
                raise DriverRuleError(f"--host is not JSON: {exc}") from None
            host = host_from_dict(data if isinstance(data, dict) else {})
        request = Request(profile=args.profile, version=args.version, branch=args.branch, modules=args.modules,
                          container_toolkit=args.container_toolkit, secure_boot_signing=args.secure_boot_signing)
        print(json.dumps(decide(load(), matrix_mod.load(), host, request), sort_keys=True))
    except (DriverRuleError, MatrixError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
