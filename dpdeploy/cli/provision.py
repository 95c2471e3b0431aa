"""`invoke provision`: run ansible/site.yml against an inventory, then print a per-host summary."""
import os
import shlex
import shutil
import sys
from pathlib import Path

from invoke import Exit, task

from dpdeploy import paths
from dpdeploy.fleet import ansible as prov, project_archive
from dpdeploy.ui import render
from dpdeploy import runner
from dpdeploy.records.run import RunRecord
from dpdeploy.cli import common


def _ansible_playbook() -> str:
    """ansible-playbook beside this Python (the tools venv), else on PATH; "" when missing."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    return str(beside) if beside.is_file() else (shutil.which("ansible-playbook") or "")


@task(help={
    "inventory": f"Inventory file or folder (default {prov.DEFAULT_INVENTORY.relative_to(paths.ROOT)}).",
    "limit": "Only these hosts or groups (ansible --limit pattern, e.g. 'gpu1,gpu2' or 'gpus').",
    "check": "Ansible check mode: report what would change on each host, change nothing there.",
    "diff": "Show file differences (ansible --diff).",
    "extra_vars": "Extra variables for ansible-playbook -e, e.g. 'densepose_setup_steps=[\"env\"]' or @vars.yml.",
    "forks": "Hosts worked on in parallel (ansible --forks; 0 = ansible.cfg's 20).",
    "serial": "Rolling run: hosts per batch, a number (2) or a percentage (25%); empty = all at once.",
    "max_fail": "Stop the run when more than this percentage of a batch failed (0-100; -1: site.yml's 100, never stop).",
    "ray": "Also make the hosts one Ray cluster (the ray_cluster role: head = first host of group ray_head, "
           "else of the inventory; the hosts need the cpu-ray env: densepose_profile=cpu-ray).",
    "dry": "Print the ansible-playbook command and change nothing (not even on this machine).",
    "json": "Print the per-host summary as JSON (the playbook output goes to the run log only).",
})
def provision(c, inventory: str = "", limit: str = "", check: bool = False, diff: bool = False,
              extra_vars: str = "", forks: int = 0, serial: str = "", max_fail: int = -1, dry: bool = False,
              json: bool = False, ray: bool = False) -> None:
    """Provision hosts with Ansible (base packages, NVIDIA driver, `invoke setup`) and summarize per host."""
    playbook = _ansible_playbook()
    common_args = dict(inventory=inventory or prov.DEFAULT_INVENTORY, limit=limit, check=check, diff=diff,
                       extra_vars=extra_vars, forks=forks, serial=serial, max_fail=None if max_fail < 0 else max_fail,
                       ray=ray)
    try:
        argv = prov.playbook_argv(playbook or "ansible-playbook", **common_args)
    except prov.ProvisionError as err:
        print(f"error: {err}", file=sys.stderr)
        raise Exit(code=2) from None
    if dry:
        # Without a run record the project is not packed here: the printed command packs it in the play.
        print(shlex.join(argv))
        return
    with common.user_errors(json):
        home = common.settings(c).home_path
    record = RunRecord.create(home, "provision")
    log = str(record.log_path("provision"))
    echo = (lambda line: None) if json else print
    if not playbook:
        echo(f"provision: installing the controller tools (ansible) from {prov.CONTROLLER_LOCK.name} into {sys.prefix} ...")
        rc = runner.stream([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--require-hashes",
                            "--only-binary=:all:", "-r", str(prov.CONTROLLER_LOCK)], log_path=log, echo=echo)
        playbook = _ansible_playbook()
        if rc != 0 or not playbook:
            print(f"error: installing ansible failed (pip exited {rc})\n  why: see {log}\n"
                  f"  next: {sys.executable} -m pip install --require-hashes -r {prov.CONTROLLER_LOCK}", file=sys.stderr)
            raise Exit(code=2)
    # The project tarball, made once for the whole run (every host unpacks the same file).
    bundle = project_archive.write_bundle(record.folder / "dpdeploy.tar.gz")
    argv = prov.playbook_argv(playbook, **common_args, bundle=bundle)
    lines: list[str] = []
    in_json = False

    def keep(line: str) -> None:
        nonlocal in_json
        lines.append(line)
        in_json = in_json or line == "{"
        if not in_json:          # warnings before the JSON callback's document
            echo(line)

    echo("$ " + shlex.join(argv))
    echo(f"provision: running ansible-playbook{' in check mode' if check else ''}; its output goes to {log}")
    rc = runner.stream(argv, log_path=log, env=prov.playbook_env(dict(os.environ)), echo=keep)
    recaps = prov.parse_json("\n".join(lines), check=check)
    result = {"returncode": rc, "check": check, "log": log, "bundle": str(bundle),
              "hosts": [r.to_dict() for r in recaps]}
    record.write("provision", result)
    print(render.to_json(result) if json else "\n" + prov.summary_text(recaps, rc, check=check))
    if rc != 0 or not recaps:
        raise Exit(code=1)
