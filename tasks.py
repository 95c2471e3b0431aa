"""dpdeploy tasks: `invoke --list`. Each task lives in dpdeploy/cli/<name>.py."""
from invoke import Collection

from dpdeploy.cli import dev, docs, doctor, facts, plan, report, setup, verify
from dpdeploy.settings import DEFAULTS

ns = Collection(facts.facts, plan.plan, setup.setup, report.report, doctor.doctor, verify.verify, docs.docs, dev.test)
ns.configure({"dpdeploy": dict(DEFAULTS)})
