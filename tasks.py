"""dpdeploy tasks: `invoke --list`. Each task lives in dpdeploy/cli/<name>.py."""
from invoke import Collection

from dpdeploy.cli import dev, doctor, facts, plan, setup, verify
from dpdeploy.settings import DEFAULTS

ns = Collection(facts.facts, plan.plan, setup.setup, dev.test, doctor.doctor, verify.verify)
ns.configure({"dpdeploy": dict(DEFAULTS)})
