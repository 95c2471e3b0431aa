"""dpdeploy tasks: `invoke --list`. Each task lives in dpdeploy/cli/<name>.py."""
from invoke import Collection

from dpdeploy.cli import build, dev, docs, doctor, env, facts, lock, plan, report, setup, smoke, verify, weights
from dpdeploy.settings import DEFAULTS

ns = Collection(facts.facts, plan.plan, setup.setup, env.env, lock.lock, build.build, weights.weights, smoke.smoke,
                report.report, doctor.doctor, verify.verify, docs.docs, dev.test)
ns.configure({"dpdeploy": dict(DEFAULTS)})
