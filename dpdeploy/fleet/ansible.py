"""`invoke provision`, the pure parts: the ansible-playbook command line and the per-host summary.

The playbook runs with Ansible's JSON callback (``ansible.posix.json``, part of the ``ansible``
package in requirements/ansible.txt; ansible-core itself ships no JSON callback), so the summary is
read from its structured ``stats`` and task results, not scraped from the text PLAY RECAP: one line
per host saying who converged, who changed (or would, in check mode), who failed and why.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from dpdeploy import paths

ANSIBLE_DIR = paths.ROOT / "ansible"
DEFAULT_INVENTORY = ANSIBLE_DIR / "inventories" / "example"
PLAYBOOK = ANSIBLE_DIR / "site.yml"
CONTROLLER_LOCK = paths.ROOT / "requirements" / "ansible.txt"
JSON_CALLBACK = "ansible.posix.json"
_SERIAL = re.compile(r"^[1-9]\d*%?$")


class ProvisionError(ValueError):
    """A request `invoke provision` refuses (bad flag values)."""


@dataclass(frozen=True)
class HostRecap:
    host: str
    ok: int = 0
    changed: int = 0
    unreachable: int = 0
    failed: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0
    check: bool = False          # a check-mode run: "changed" means "would change"
    message: str = ""            # why the host failed (its last failed task's message)

    @property
    def status(self) -> str:
        """One word per host: unreachable, failed, changed (would change in check mode) or ok."""
        if self.unreachable:
            return "unreachable"
        if self.failed:
            return "failed"
        if self.changed:
            return "would change" if self.check else "changed"
        return "ok"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


def check_flags(forks: int = 0, serial: str = "", max_fail: Optional[int] = None) -> None:
    """Refuse flag values ansible-playbook would misread (ProvisionError says which and why)."""
    if forks < 0:
        raise ProvisionError(f"--forks {forks}: give a positive number of parallel hosts (0 = ansible.cfg's 20)")
    if serial and not _SERIAL.match(serial):
        raise ProvisionError(f"--serial {serial!r}: give a number of hosts per batch (2) or a percentage (25%)")
    if max_fail is not None and not 0 <= max_fail <= 100:
        raise ProvisionError(f"--max-fail {max_fail}: give a percentage of a batch from 0 to 100")


def playbook_argv(
    ansible_playbook: str,
    *,
    inventory: str | Path = DEFAULT_INVENTORY,
    playbook: str | Path = PLAYBOOK,
    limit: str = "",
    check: bool = False,
    diff: bool = False,
    extra_vars: str = "",
    forks: int = 0,
    serial: str = "",
    max_fail: Optional[int] = None,
    bundle: str | Path = "",
    ray: bool = False,
) -> list[str]:
    """The ansible-playbook command line `invoke provision` runs (and `--dry` prints)."""
    check_flags(forks, serial, max_fail)
    argv = [ansible_playbook, "-i", str(inventory), str(playbook)]
    if limit:
        argv += ["--limit", limit]
    if check:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    if forks:
        argv += ["--forks", str(forks)]
    ours: dict[str, Any] = {}
    if serial:
        ours["dpdeploy_serial"] = serial                  # site.yml: serial
    if max_fail is not None:
        ours["dpdeploy_max_fail_percentage"] = max_fail   # site.yml: max_fail_percentage
    if bundle:
        ours["densepose_bundle"] = str(bundle)            # packed once per run, not per host
    if ray:
        ours["ray_cluster_enabled"] = True                # site.yml: the ray_cluster role and its verify play
    if ours:
        argv += ["--extra-vars", json.dumps(ours, sort_keys=True)]
    if extra_vars:
        argv += ["--extra-vars", extra_vars]
    return argv


def playbook_env(base: dict[str, str]) -> dict[str, str]:
    """ansible.cfg beside the playbook, the JSON callback alone on stdout, no colours, unbuffered."""
    return {**base, "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0", "PYTHONUNBUFFERED": "1",
            "ANSIBLE_STDOUT_CALLBACK": JSON_CALLBACK, "ANSIBLE_CALLBACKS_ENABLED": ""}


def _json_document(text: str) -> Optional[dict[str, Any]]:
    """The JSON callback's document in ansible-playbook's output: it may follow warnings, and a
    warning without a final newline may run into its first brace (stderr and stdout merged)."""
    decoder = json.JSONDecoder()
    for start in re.finditer(r"(?m)^\{|\{(?=\s*\n\s*\")", text):
        try:
            doc, _ = decoder.raw_decode(text, start.start())
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict) and "stats" in doc:
            return doc
    return None


def _messages(doc: dict[str, Any]) -> dict[str, str]:
    """Per host, the message of the last task that failed it (or found it unreachable)."""
    why: dict[str, str] = {}
    for play in doc.get("plays", []):
        for task in play.get("tasks", []):
            for host, result in task.get("hosts", {}).items():
                if not isinstance(result, dict) or result.get("ignore_errors"):
                    continue
                if result.get("failed") or result.get("unreachable"):
                    msg = result.get("msg") or result.get("stderr") or result.get("module_stderr") or ""
                    name = task.get("task", {}).get("name", "")
                    why[host] = " ".join(f"{name}: {msg}".split())[:400]
    return why


def parse_json(text: str, check: bool = False) -> list[HostRecap]:
    """The hosts of the JSON callback's stats, sorted by name, each with why it failed."""
    doc = _json_document(text)
    if doc is None:
        return []
    why = _messages(doc)
    recaps = []
    for host, s in sorted(doc["stats"].items()):
        recaps.append(HostRecap(host, ok=s.get("ok", 0), changed=s.get("changed", 0),
                                unreachable=s.get("unreachable", 0), failed=s.get("failures", 0),
                                skipped=s.get("skipped", 0), rescued=s.get("rescued", 0),
                                ignored=s.get("ignored", 0), check=check,
                                message=why.get(host, "") if s.get("failures") or s.get("unreachable") else ""))
    return recaps


def summary_text(recaps: Sequence[HostRecap], returncode: int, check: bool = False) -> str:
    """The per-host summary printed at the end of a run."""
    if not recaps:
        return (f"provision: no per-host results in the output (ansible-playbook exited {returncode}); "
                "see the log")
    width = max(len(r.host) for r in recaps)
    lines = ["Per-host summary" + (" (check mode: nothing was changed)" if check else "")]
    for r in recaps:
        lines.append(f"  {r.host.ljust(width)}  {r.status:<12}  ok={r.ok} changed={r.changed} "
                     f"failed={r.failed} unreachable={r.unreachable} skipped={r.skipped}")
        if r.message:
            lines.append(f"  {' ' * width}    {r.message}")
    bad = [r.host for r in recaps if r.status in ("failed", "unreachable")]
    tail = f"; failed or unreachable: {', '.join(bad)}" if bad else ""
    if check:
        would = sum(r.status == "would change" for r in recaps)
        same = sum(r.status == "ok" for r in recaps)
        lines.append(f"  {would}/{len(recaps)} hosts would change, {same} already converged" + tail)
    else:
        lines.append(f"  {len(recaps) - len(bad)}/{len(recaps)} hosts converged" + tail)
    return "\n".join(lines)
