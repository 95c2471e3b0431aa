"""dpdeploy tasks: `invoke --list`. Each task lives in dpdeploy/cli/<name>.py."""
from invoke import Collection

from dpdeploy.cli import dev, docs, facts, plan, report, setup
from dpdeploy.settings import DEFAULTS

ns = Collection(facts.facts, plan.plan, setup.setup, report.report, docs.docs, dev.test)
ns.configure({"dpdeploy": dict(DEFAULTS)})
