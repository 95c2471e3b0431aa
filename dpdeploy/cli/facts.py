"""`invoke facts`: what this host is."""
from invoke import task

from dpdeploy.ui import render
from dpdeploy.cli import common


@task(help={
    "json": "Print the facts as JSON (the format --facts FILE reads).",
    "facts": "Show a recorded facts JSON file instead of probing this host.",
})
def facts(c, json: bool = False, facts: str = "") -> None:
    """Probe this host: OS, CPU, RAM, disk, Python, gcc, CUDA, driver, GPUs."""
    with common.user_errors(json):
        found = common.facts(common.settings(c, facts=facts))
        print(found.to_json() if json else render.facts_text(found), end="\n" if not json else "")
