"""`invoke setup`: the whole deployment, planned first, then each step."""
import contextlib
from pathlib import Path
from typing import Callable, Optional

from invoke import Exit, task

from dpdeploy.bundle import unpack
from dpdeploy.cli import common
from dpdeploy.cli.plan import PLAN_HELP, PYTHON_HELP
from dpdeploy.envs import lockfile as locks
from dpdeploy.plan.resolve import Plan
from dpdeploy.plan.settings import Settings, SettingsError
from dpdeploy.records.run import RunRecord
from dpdeploy.records.terminal import capture, command_line
from dpdeploy.steps import pipeline
from dpdeploy.ui import render


def offline_bundle(s: Settings, resolved: Plan, machine: str,
                   dry: bool) -> Optional[Callable[[], tuple[Settings, unpack.Unpacked]]]:
    """--offline --bundle: the bundle checked in full (refused before anything is written); returns
    what unpacks it (call it under the state lock: it writes <home>/bundles), which gives the
    settings whose build and weights steps take the bundle's source and weights. None: no bundle
    (or a dry run, which unpacks nothing)."""
    if not (s.offline or s.bundle):
        return None
    if not s.bundle:
        raise SettingsError("--offline needs --bundle FILE (what `invoke bundle` wrote); next: pass --bundle")
    if s.conda:
        raise SettingsError("--offline installs a bundle of pip wheels, not a conda lock; next: drop --conda")
    bundle = Path(s.bundle).expanduser().resolve()
    lock = locks.load(common.load_matrix(s).profile(resolved.profile))
    manifest, digest = unpack.check(bundle, lock, resolved.python_version, machine, resolved.detectron2_commit)
    if dry:
        return None

    def unpacked() -> tuple[Settings, unpack.Unpacked]:
        done = unpack.unpack(bundle, manifest, digest, Path(resolved.home))
        values = {**s.values, "offline": True, "source": str(done.source), "weights_from": str(done.weights or "")}
        return Settings(values, {**s.origins, "source": "--bundle", "weights_from": "--bundle"}), done

    return unpacked


@task(help={
    **PLAN_HELP,
    "python": PYTHON_HELP,
    "dry": "Print the plan and the steps, change nothing.",
    "only": "Run only these steps (comma-separated, e.g. env,build); `plan` records the facts and plan only.",
    "source": "detectron2 source for the build step: git URL, local repo/checkout, archive or directory.",
    "allow_unpinned": "Build a source whose commit is not the matrix's pin (recorded loudly).",
    "force_smoke": "Run the smoke tests even when they already passed on this env, build and weights.",
    "no_wait": common.NO_WAIT_HELP,
    "offline": "Deploy from --bundle only: no index, no download, no network.",
    "bundle": "The archive `invoke bundle` wrote (checked in full before anything changes).",
})
def setup(c, dry: bool = False, json: bool = False, facts: str = "", profile: str = "", arch_list: str = "",
          prefix: str = "", max_jobs: int = 0, only: str = "", source: str = "", allow_unpinned: bool = False,
          force_smoke: bool = False, python: str = "", offline: bool = False, bundle: str = "",
          no_wait: bool = False) -> None:
    """Deploy DensePose on this host: env, build, weights, smoke tests, report."""
    with common.user_errors(json):
        s = common.settings(c, facts=facts, profile=profile, arch_list=arch_list, prefix=prefix, max_jobs=max_jobs,
                            source=source, allow_unpinned=allow_unpinned or None, force_smoke=force_smoke or None,
                            python=python, offline=offline or None, bundle=bundle)
        steps = common.step_names(only)
        found, resolved = common.plan(s)
        from_bundle = offline_bundle(s, resolved, found.machine, dry)
        with common.state_lock(s, no_wait=no_wait, dry=dry, quiet=json):
            s, unpacked = from_bundle() if from_bundle else (s, None)
            record = None if dry else RunRecord.create(resolved.home, "setup")
            tee = capture(record.folder, command_line()) if record else contextlib.nullcontext()
            with tee:
                if not json:
                    print(render.plan_text(resolved) + "\n")
                    if unpacked:
                        print(f"offline: from bundle {s.bundle} (manifest sha256 {unpacked.manifest_sha256[:16]})\n")
                echo = (lambda line: None) if json else print
                result = pipeline.run(found, resolved, s, common.load_matrix(s), only=steps,
                                      dry=dry, echo=echo, record=record, bundle=unpacked)
                if json:
                    print(render.to_json(result))
                elif result.record:
                    print(f"\nrun record: {result.record.folder}")
        if not result.ok:   # a step that refused before acting (a foreign prefix, no disk) is exit 2
            raise Exit(code=2 if any(step.detail.get("refused") for step in result.steps) else 1)
