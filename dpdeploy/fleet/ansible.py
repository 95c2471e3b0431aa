"""`invoke provision`, the pure parts: the ansible-playbook command line and the per-host summary.

The command runs through ``runner.stream``; its PLAY RECAP is parsed here into one line per
host, so a fleet run ends with who converged, who changed, who failed and who was unreachable.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from dpdeploy import paths

ANSIBLE_DIR = paths.ROOT / "ansible"
DEFAULT_INVENTORY = ANSIBLE_DIR / "inventories" / "example"
PLAYBOOK = ANSIBLE_DIR / "site.yml"
CONTROLLER_LOCK = paths.ROOT / "requirements" / "ansible.txt"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# One recap line, e.g. "web1 : ok=5 changed=0 unreachable=0 failed=0 skipped=1 rescued=0 ignored=0"
_RECAP_LINE = re.compile(r"^(?P<host>\S+)\s*:\s*(?P<counts>(?:\w+=\d+\s*)+)$")
_COUNT = re.compile(r"(\w+)=(\d+)")


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

    @property
    def status(self) -> str:
        """One word per host: unreachable, failed, changed or ok."""
        if self.unreachable:
            return "unreachable"
        if self.failed:
            return "failed"
        return "changed" if self.changed else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


def playbook_argv(
    ansible_playbook: str,
    *,
    inventory: str | Path = DEFAULT_INVENTORY,
    playbook: str | Path = PLAYBOOK,
    limit: str = "",
    check: bool = False,
    diff: bool = False,
    extra_vars: str = "",
) -> list[str]:
    """The ansible-playbook command line `invoke provision` runs (and `--dry` prints)."""
    argv = [ansible_playbook, "-i", str(inventory), str(playbook)]
    if limit:
        argv += ["--limit", limit]
    if check:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    if extra_vars:
        argv += ["--extra-vars", extra_vars]
    return argv


def playbook_env(base: dict[str, str]) -> dict[str, str]:
    """ansible.cfg beside the playbook, no colours (the recap is parsed), output unbuffered."""
    return {**base, "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0", "PYTHONUNBUFFERED": "1"}


def parse_recap(lines: Iterable[str]) -> list[HostRecap]:
    """The hosts of the last PLAY RECAP in ansible-playbook's output, in its order."""
    recaps: list[HostRecap] = []
    in_recap = False
    for raw in lines:
        line = _ANSI.sub("", raw).strip()
        if line.startswith("PLAY RECAP"):
            recaps, in_recap = [], True
            continue
        if not in_recap or not line:
            continue
        match = _RECAP_LINE.match(line)
        if match is None:
            in_recap = False
            continue
        counts = {k: int(v) for k, v in _COUNT.findall(match["counts"]) if k in HostRecap.__dataclass_fields__}
        recaps.append(HostRecap(match["host"], **counts))
    return recaps


def summary_text(recaps: Sequence[HostRecap], returncode: int) -> str:
    """The per-host summary printed at the end of a run."""
    if not recaps:
        return f"provision: no PLAY RECAP in the output (ansible-playbook exited {returncode}); see the log above"
    width = max(len(r.host) for r in recaps)
    lines = ["Per-host summary"]
    for r in recaps:
        lines.append(f"  {r.host.ljust(width)}  {r.status:<11}  ok={r.ok} changed={r.changed} "
                     f"failed={r.failed} unreachable={r.unreachable} skipped={r.skipped}")
    bad = [r.host for r in recaps if r.status in ("failed", "unreachable")]
    lines.append(f"  {len(recaps) - len(bad)}/{len(recaps)} hosts converged" +
                 (f"; failed or unreachable: {', '.join(bad)}" if bad else ""))
    return "\n".join(lines)
