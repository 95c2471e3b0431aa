"""dpdeploy's own tiny torch extension (dpdeploy/build/testext_src), built by the build step's code into an env.

It proves the compile toolchain without detectron2's source (in CI, and as the Docker image's
``testext`` stage): wheel via the wheel cache, install, then import and call its op.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from dpdeploy import paths
from dpdeploy.build import cache as wheelcache
from dpdeploy.build import wheels
from dpdeploy.envs.site import torch_info
from dpdeploy.plan.resolve import Plan
from dpdeploy.runner import run

EXT = paths.TESTEXT_SOURCE
PARTS = (wheels.Project("dpdeploy-testext", ""),)
CHECK = ("import json, torch, dpdeploy_testext._C as c; "
         "print(json.dumps({'file': c.__file__, 'out': c.add_one(torch.zeros(3)).tolist(), "
         "'cuda_op': hasattr(c, 'add_one_cuda')}))")


class ExtensionError(Exception):
    """The extension built but does not load or compute: what, and the output."""


def build_and_load(plan: Plan, machine: str, log: Path, echo: Callable[[str], None] = print) -> dict:
    """Build (or reuse from ``<home>/cache/wheels``), install into ``plan.prefix``, load, call."""
    prefix = Path(plan.prefix)
    python = str(prefix / "bin" / "python")
    fields = wheelcache.key_fields("dpdeploy-testext", torch_info(prefix), plan, machine)
    key = wheelcache.cache_key(fields)
    log.parent.mkdir(parents=True, exist_ok=True)
    built = wheelcache.store(Path(plan.home) / "cache" / "wheels", key, fields,
                              lambda out: wheels.compile_wheels(plan, EXT, PARTS, out, log, echo))
    wheels.install_wheels(built, python, log)
    done = run([python, "-c", CHECK], timeout=300, cwd="/")
    if done is None or not done.ok:
        raise ExtensionError(f"dpdeploy_testext does not load in {prefix}: "
                           f"{done.stderr[-2000:] if done else 'the interpreter could not run'}")
    loaded = json.loads(done.stdout)
    if loaded["out"] != [1.0, 1.0, 1.0] or loaded["cuda_op"] != plan.force_cuda:
        raise ExtensionError(f"dpdeploy_testext computed {loaded['out']} (cuda op: {loaded['cuda_op']}); "
                           f"expected [1.0, 1.0, 1.0] (cuda op: {plan.force_cuda})")
    return {"key": key, "wheels": [w.name for w in built], **loaded}
