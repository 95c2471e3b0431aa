"""Generated docs match the code (run `invoke docs` after changing a task or a setting)."""
from dpdeploy.cli import docgen as docs

from .conftest import ROOT


def test_generated_docs_are_current():
    from tasks import ns
    assert docs.stale(ns, ROOT) == [], "stale generated docs: run `invoke docs` and commit"


def test_cli_reference_covers_every_task_and_option():
    from tasks import ns
    text = docs.cli_reference(ns)
    for name in ns.task_names:
        assert f"## `invoke {name}`" in text
        for arg in ns[name].get_arguments():
            assert f"`--{arg.names[0].replace('_', '-')}" in text


def test_configuration_lists_every_default():
    from dpdeploy.plan.settings import DEFAULTS
    text = docs.configuration((ROOT / "dpdeploy" / "plan" / "settings.py").read_text())
    for name in DEFAULTS:
        assert f"| `{name}` | `DPDEPLOY_{name.upper()}`" in text
