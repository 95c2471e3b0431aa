"""dpdeploy tasks: `invoke --list`. Each task lives in dpdeploy/cli/<name>.py."""
from pathlib import Path

from invoke import Collection

from dpdeploy.cli import (build, bundle, dev, docker, docs, doctor, env, facts, lock, plan, predict, provision,
    report, serve, setup, smoke, testext, verify, weights)
from dpdeploy.cli.common import check_project_config, strict_int_flags
from dpdeploy.plan.settings import DEFAULTS

check_project_config(str(Path(__file__).resolve().parent))  # invoke loads invoke.yaml after this module

ns = Collection(facts.facts, plan.plan, setup.setup, env.env, lock.lock, build.build, weights.weights,
                predict.predict, serve.serve, smoke.smoke, report.report, doctor.doctor, verify.verify, provision.provision,
                docs.docs, testext.testext, dev.test, bundle.bundle)
ns.add_collection(docker.ns)
ns.configure({"dpdeploy": dict(DEFAULTS)})
strict_int_flags(ns)
