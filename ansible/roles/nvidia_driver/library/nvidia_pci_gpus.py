#!/usr/bin/python
"""Ansible module: NVIDIA GPUs on the PCI bus, read from sysfs (works before any driver is installed)."""
from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: nvidia_pci_gpus
short_description: Detect NVIDIA GPUs on the PCI bus
description:
  - Reads C(/sys/bus/pci/devices/*/vendor) and C(class) and returns the devices whose vendor is
    NVIDIA (C(0x10de)) and whose class is a display controller (C(0x03xxxx)).
  - Needs no driver, no lspci and no root; changes nothing.
options:
  sysfs_root:
    description: Folder holding the PCI devices (for tests).
    type: path
    default: /sys/bus/pci/devices
author: dpdeploy
"""

EXAMPLES = r"""
- name: Detect NVIDIA GPUs
  nvidia_pci_gpus:
"""

RETURN = r"""
ansible_facts:
  description: >-
    C(nvidia_pci_gpus), a list of C({slot, device, class}) (hex IDs), empty without GPUs;
    C(nvidia_pci_nvswitches), the NVIDIA bridge-class devices (NVSwitch chips), same form.
  returned: always
  type: dict
"""

NVIDIA_VENDOR = "0x10de"   # PCI-SIG vendor ID of NVIDIA
DISPLAY_CLASS = "0x03"     # PCI base class 03: display controller (VGA 0300, 3D 0302)
BRIDGE_CLASS = "0x0680"    # PCI class 0680: other bridge (how NVSwitch chips show up)


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip().lower()
    except OSError:
        return ""


def nvidia_gpus(sysfs_root: str, klass_prefix: str = DISPLAY_CLASS) -> list[dict[str, str]]:
    """The NVIDIA devices of a class (display by default) under ``sysfs_root``, sorted by PCI slot."""
    try:
        slots = sorted(os.listdir(sysfs_root))
    except OSError:
        return []
    found = []
    for slot in slots:
        base = os.path.join(sysfs_root, slot)
        klass = _read(os.path.join(base, "class"))
        if _read(os.path.join(base, "vendor")) == NVIDIA_VENDOR and klass.startswith(klass_prefix):
            found.append({"slot": slot, "device": _read(os.path.join(base, "device")), "class": klass})
    return found


def main() -> None:
    module = AnsibleModule(argument_spec={"sysfs_root": {"type": "path", "default": "/sys/bus/pci/devices"}},
                           supports_check_mode=True)
    root = module.params["sysfs_root"]
    module.exit_json(changed=False, ansible_facts={"nvidia_pci_gpus": nvidia_gpus(root),
                                                    "nvidia_pci_nvswitches": nvidia_gpus(root, BRIDGE_CLASS)},
                     sysfs_readable=os.path.isdir(root))


if __name__ == "__main__":
    main()
