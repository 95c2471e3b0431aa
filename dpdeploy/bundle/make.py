"""`invoke bundle`: the profile's locked wheels (``pip download --require-hashes`` from the lock;
an sdist-only pin is built into a wheel here, where there is network), the detectron2 source
archive, the weights when given, and the manifest, written as one tar atomically."""
from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from dpdeploy.envs.lockfile import Lock, normalize
from dpdeploy.fsutil import sha256_file
from dpdeploy.records import bundle_manifest as bm
from dpdeploy.runner import Runner, run

REQUIREMENTS = "requirements.txt"


class BundleError(Exception):
    """A bundle cannot be made or used; the message is one line: what, why, next."""


def wheel_pin(name: str) -> tuple[str, str]:
    """(normalized name, version) of a wheel file name."""
    try:
        dist, version, _, _ = parse_wheel_filename(name)
    except InvalidWheelFilename as exc:
        raise BundleError(f"{name} is not a wheel ({exc})") from None
    return normalize(dist), str(version)


def missing_pins(lock: Lock, wheel_names: list[str]) -> list[str]:
    """The lock's pins no wheel in ``wheel_names`` provides."""
    have = {wheel_pin(n) for n in wheel_names}
    return sorted(f"{name}=={pin.version}" for name, pins in lock.pins.items() for pin in pins
                  if (name, pin.version) not in have)


def _pip(python: str, runner: Runner, *args: str) -> None:
    done = runner([python, "-m", "pip", "--disable-pip-version-check", *args], timeout=3600)
    if done is None or not done.ok:
        tail = "pip did not run" if done is None else (done.stderr.strip().splitlines() or ["exit " + str(done.returncode)])[-1]
        raise BundleError(f"pip {args[0]} failed: {tail}; next: check the index pip uses here (`pip config list`)")


def download_wheels(lock_file: Path, python: str, into: Path, runner: Runner = run) -> list[Path]:
    """Every pin of the lock as a wheel in ``into`` (hashes checked by pip)."""
    got = into.parent / "download"
    _pip(python, runner, "download", "--no-deps", "--require-hashes", "-d", str(got), "-r", str(lock_file))
    into.mkdir(parents=True, exist_ok=True)
    for item in sorted(got.iterdir()):
        if item.name.endswith(".whl"):
            shutil.move(str(item), into / item.name)
        else:   # an sdist (fvcore, antlr4...): built once here, so the air-gapped host builds nothing
            _pip(python, runner, "wheel", "--no-deps", "-w", str(into), str(item))
    return sorted(into.glob("*.whl"))


def _entry(path: Path, arcname: str, kind: str) -> bm.BundleFile:
    return bm.BundleFile(arcname, kind, sha256_file(path), path.stat().st_size)


def make(lock: Lock, lock_file: Path, out: Path, *, python: str, python_version: str, machine: str, commit: str,
         source: Path, weights: Optional[Path] = None, model: str = "", weights_trust: str = "",
         runner: Runner = run, echo: Callable[[str], None] = print) -> bm.BundleManifest:
    """Write the bundle to ``out`` (a partial file never carries its name)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".bundle-") as tmp:
        echo(f"  downloading the {len(lock.pins)} pins of {lock.path} (pip download --require-hashes)")
        wheels = download_wheels(lock_file, python, Path(tmp) / "wheels", runner)
        missing = missing_pins(lock, [w.name for w in wheels])
        if missing:
            raise BundleError(f"pip gave no wheel for {', '.join(missing)}; next: check the index, then bundle again")
        files = [_entry(w, f"wheels/{w.name}", "wheel") for w in wheels]
        reqs = Path(tmp) / REQUIREMENTS
        pins = ["{}=={}".format(*wheel_pin(w.name)) for w in wheels]
        reqs.write_text("".join(f"{p} --hash=sha256:{f.sha256}\n" for p, f in zip(pins, files, strict=True)),
                        encoding="utf-8")
        members = [(w, f.path) for w, f in zip(wheels, files, strict=True)] + [(reqs, REQUIREMENTS)]
        files.append(_entry(reqs, REQUIREMENTS, "requirements"))
        members.append((source, f"source/{source.name}"))
        files.append(_entry(source, f"source/{source.name}", "source"))
        if weights is not None:
            members.append((weights, f"weights/{model}.pkl"))
            files.append(_entry(weights, f"weights/{model}.pkl", "weights"))
        mm = ".".join(python_version.split(".")[:2])
        manifest = bm.BundleManifest(lock.profile, lock.path, lock.sha256, mm, "cp" + mm.replace(".", ""),
                                     f"linux_{machine}", commit, model if weights else "",
                                     weights_trust if weights else "", time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                     tuple(files))
        part = Path(tmp) / "bundle.tar"
        with tarfile.open(part, "w") as tar:
            data = bm.dumps(manifest)
            info = tarfile.TarInfo(bm.FILE)
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))
            for path, arcname in members:
                tar.add(str(path), arcname=arcname, recursive=False)
        os.replace(part, out)
    return manifest
