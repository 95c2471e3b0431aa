"""dpdeploy tasks: `invoke --list`. Each task lives in dpdeploy/cli/<name>.py."""
from invoke import Collection

from dpdeploy.cli import build, dev, env, facts, lock, plan, predict, setup, smoke, weights
from dpdeploy.settings import DEFAULTS

ns = Collection(facts.facts, plan.plan, setup.setup, env.env, lock.lock, build.build, dev.test, weights.weights,
                smoke.smoke, predict.predict)
ns.configure({"dpdeploy": dict(DEFAULTS)})
