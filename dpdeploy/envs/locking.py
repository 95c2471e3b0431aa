"""`invoke lock`: render every lock input from the matrix and resolve the locks."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Optional

from dpdeploy import paths
from dpdeploy.envs import conda as condaenv, lockfile as locks
from dpdeploy.fsutil import atomic_write_text
from dpdeploy.envs.lockfile import LockError, LockResult
from dpdeploy.plan.matrix import Matrix
from dpdeploy.host.network import Reach, reachable
from dpdeploy.runner import Runner, run


def render_conda_inputs(matrix: Matrix, python_version: str, root: Path = paths.ROOT) -> list[str]:
    """env/environment-<profile>.yml for every profile but host ones (a conda env brings its own torch)
    and env/virtual-packages.yml (pure renders)."""
    written = []
    for profile in (p for p in matrix.profiles.values() if not p.host):
        path = condaenv.environment_path(profile.name)
        atomic_write_text(root / path, condaenv.render_environment(matrix, profile, python_version))
        written.append(str(path))
    atomic_write_text(root / condaenv.VIRTUAL_PACKAGES, condaenv.render_virtual_packages(matrix))
    return written + [str(condaenv.VIRTUAL_PACKAGES)]


def lock_pip(matrix: Matrix, only: str, python_version: str, *, dry: bool = False, runner: Runner = run,
             reach: Reach = reachable, root: Path = paths.ROOT) -> list[LockResult]:
    """Lock ``only`` (errors are raised), or every profile (unreachable indexes are skipped)."""
    names = [matrix.profile(only).name] if only else list(matrix.profiles)
    results = []
    for name in names:
        profile = matrix.profile(name)
        why = None if (only or dry) else locks.unreachable_index(profile, reach)
        if why:
            results.append(locks.skipped(profile, why))
            continue
        results.append(locks.lock_profile(matrix, profile, python_version, dry=dry, runner=runner,
                                          reach=reach, root=root))
    if not dry:
        render_conda_inputs(matrix, python_version, root)
    return results


def lock_conda(matrix: Matrix, only: str, python_version: str, *, dry: bool = False, runner: Runner = run,
               reach: Reach = reachable, which: Callable[[str], Optional[str]] = shutil.which,
               root: Path = paths.ROOT) -> list[LockResult]:
    """conda-lock each profile's environment yml (fails fast without conda-lock or the channel)."""
    names = [matrix.profile(only).name] if only else [n for n, p in matrix.profiles.items() if not p.host]
    if any(matrix.profile(n).host for n in names):
        raise LockError(f"no conda lock for the host profile {only}", ["it uses the torch of the interpreter given "
                        "with --python"], [f"lock it with pip: `invoke lock --profile {only}`"])
    commands = {name: condaenv.lock_argv(matrix, name) for name in names}
    if dry:
        return [LockResult(n, "planned", " ".join(argv), str(condaenv.lockfile_path(n))) for n, argv in commands.items()]
    render_conda_inputs(matrix, python_version, root)
    condaenv.preflight(matrix, which, reach)
    results = []
    for name, argv in commands.items():
        done = runner(argv, timeout=3600, cwd=str(root))
        if done is None or not done.ok:
            tail = "" if done is None else "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise LockError(f"conda-lock failed for {name}", [tail or "conda-lock did not run"],
                            [f"fix the cause above and run `invoke lock --conda --profile {name}` again"])
        path = root / condaenv.lockfile_path(name)
        results.append(LockResult(name, "locked", " ".join(argv), str(condaenv.lockfile_path(name)),
                                  size_bytes=path.stat().st_size if path.exists() else 0))
    return results
