"""`invoke bundle`: one archive for an air-gapped host (the profile's locked wheels, the detectron2
source, the weights, a manifest of sha256s); `invoke setup --offline --bundle FILE` deploys it."""
import platform
import sys
from pathlib import Path

from invoke import task

from dpdeploy import paths
from dpdeploy.build.source import kind_of
from dpdeploy.bundle.make import BundleError, make
from dpdeploy.cli import common
from dpdeploy.envs import lockfile as locks
from dpdeploy.inference import weights as w
from dpdeploy.plan.matrix import version_tuple
from dpdeploy.ui import render


def _source(spec: str, commit: str) -> Path:
    if not spec or kind_of(spec) != "archive":
        raise BundleError(f"--source {spec or '(none)'}: the bundle needs the detectron2 source as an archive; next: "
                          f"git -C detectron2 archive --format=tar.gz -o detectron2-{commit}.tar.gz {commit}")
    return Path(spec).expanduser().resolve()


@task(help={
    "profile": "Profile whose hash-pinned lock is bundled (env/locks/<profile>.txt), e.g. host, cpu, cu130.",
    "out": "Archive to write, e.g. dpdeploy-host.tar.",
    "source": "detectron2 source archive at the matrix's pin (a git-archive .tar.gz).",
    "weights": "Weights file to include (default: the cached weights of the default model, when present).",
    "dry": "Say what would be bundled; download and write nothing.",
    "json": "Print the manifest as JSON.",
})
def bundle(c, profile: str, out: str, source: str = "", weights: str = "", dry: bool = False,
           json: bool = False) -> None:
    """Write one archive an air-gapped host deploys from: wheels, detectron2 source, weights, manifest."""
    with common.user_errors(json):
        s = common.settings(c, profile=profile)
        matrix = common.load_matrix(s)
        chosen = matrix.profile(profile)
        lock = locks.load(chosen)
        here = ".".join(platform.python_version().split(".")[:2])
        if lock.python and version_tuple(lock.python) != version_tuple(here):
            raise BundleError(f"{lock.path} is for Python {lock.python}, pip here is Python {here}; next: run "
                              f"`invoke bundle` from a tools venv of Python {lock.python} (python{lock.python} bootstrap.py)")
        src = _source(source, matrix.d2_commit)
        spec = w.ModelSpec.from_matrix(matrix)
        found = w.cached(s.home_path, spec) if not weights else None
        weights_file = Path(weights).expanduser().resolve() if weights else (Path(found.path) if found else None)
        if weights_file is not None and not weights_file.is_file():
            raise BundleError(f"--weights {weights}: no such file; next: pass a weights file or leave --weights out")
        what = f"{lock.path} ({len(lock.pins)} pins), {src.name}, " + (str(weights_file) if weights_file else "no weights")
        if dry:
            print(render.to_json({"planned": what, "out": out}) if json else f"would bundle {what} into {out}")
            return
        manifest = make(lock, paths.ROOT / lock.path, Path(out).expanduser().resolve(), python=sys.executable,
                        python_version=lock.python or here, machine=platform.machine(), commit=matrix.d2_commit,
                        source=src, weights=weights_file, model=spec.name,
                        weights_trust=found.trust if found else ("unverified" if weights_file else ""),
                        echo=(lambda line: None) if json else print)
        if json:
            print(render.to_json(manifest))
        else:
            size = sum(f.size for f in manifest.files) / 2**20
            print(f"wrote {out}: {len(manifest.files)} files, {size:.0f} MiB, for {manifest.profile} "
                  f"({manifest.python_tag}, {manifest.platform}); deploy it with "
                  f"`invoke setup --offline --bundle {out} --profile {manifest.profile}`")
