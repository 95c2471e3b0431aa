"""dpdeploy tasks: `invoke --list`. Each task lives in dpdeploy/cli/<name>.py."""
from invoke import Collection

from dpdeploy.cli import dev, facts, plan, provision, setup
from dpdeploy.settings import DEFAULTS

ns = Collection(facts.facts, plan.plan, setup.setup, dev.test)
ns.add_task(provision.provision)
ns.configure({"dpdeploy": dict(DEFAULTS)})
