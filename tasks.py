"""dpdeploy tasks: `invoke --list`. Each task lives in dpdeploy/cli/<name>.py."""
from invoke import Collection

from dpdeploy.cli import build, dev, facts, plan, setup
from dpdeploy.settings import DEFAULTS

ns = Collection(facts.facts, plan.plan, setup.setup, build.build, dev.test)
ns.configure({"dpdeploy": dict(DEFAULTS)})
