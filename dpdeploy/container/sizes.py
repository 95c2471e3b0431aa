"""What an image weighs: its layers (the engine's history) and the Python distributions of its
env and runtime venv (the files each one's RECORD lists, measured inside the image)."""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

from dpdeploy.container.engines import Engine, EngineError
from dpdeploy.runner import Completed, run

# The image's two Python trees (docker/Dockerfile): the locked env and the runtime venv.
VENVS = ("/opt/dpdeploy/env", "/app/.venv")

# Run by each venv's own python inside the image: {distribution: bytes of the files it installed}.
MEASURE = """\
import importlib.metadata as m, json, os
seen, sizes = set(), {}
for d in m.distributions():
    total = 0
    for f in d.files or ():
        p = os.path.realpath(d.locate_file(f))
        if p not in seen:
            seen.add(p)
            try:
                total += os.lstat(p).st_size
            except OSError:
                pass
    name = d.metadata["Name"] or "?"
    sizes[name] = sizes.get(name, 0) + total
print(json.dumps(sizes))
"""


@dataclass(frozen=True)
class Layer:
    size: int
    created_by: str


@dataclass
class ImageSizes:
    tag: str
    layers: list[Layer] = field(default_factory=list)
    packages: dict[str, dict[str, int]] = field(default_factory=dict)   # venv -> {distribution: bytes}

    @property
    def total(self) -> int:
        return sum(layer.size for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {"tag": self.tag, "total": self.total, "layers": [asdict(x) for x in self.layers],
                "packages": self.packages}


def _ok(done: Optional[Completed], what: str) -> str:
    if done is None or not done.ok:
        why = done.stderr.strip().splitlines()[-1] if done and done.stderr.strip() else "no answer"
        raise EngineError(f"{what} failed ({why}); next: list the images (`podman images`, `docker images`) "
                          "or build this one with `invoke docker.build`")
    return done.stdout


def _history_engine(engine: Engine, which: Callable[[str], Optional[str]]) -> Engine:
    """buildah keeps no layer sizes: podman reads the same storage (same --root and driver)."""
    if engine.name != "buildah":
        return engine
    exe = which("podman")
    if exe is None:
        raise EngineError("layer sizes of buildah's images are read with podman, which is not installed; "
                          "next: apt-get install podman")
    return Engine("podman", exe, engine.storage_driver, engine.storage_root)


def layers(engine: Engine, tag: str, runner=run, which=shutil.which) -> list[Layer]:
    """The image's layers, base first, with the instruction that made each."""
    hist = _history_engine(engine, which)
    if hist.name == "docker":
        out = _ok(runner([*hist.base(), "history", "--no-trunc", "--human=false", "--format", "{{json .}}", tag],
                         timeout=120), f"docker history {tag}")
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        found = [Layer(int(r.get("Size") or 0), r.get("CreatedBy", "")) for r in rows]
    else:
        out = _ok(runner([*hist.base(), "history", "--no-trunc", "--format", "json", tag], timeout=120),
                  f"podman history {tag}")
        found = [Layer(int(r.get("size") or 0), r.get("CreatedBy", "")) for r in json.loads(out)]
    return list(reversed(found))


def _in_image(engine: Engine, tag: str, argv: list[str], runner) -> Optional[Completed]:
    if engine.name == "docker":
        return runner([*engine.base(), "run", "--rm", "--entrypoint", argv[0], tag, *argv[1:]], timeout=600)
    made = _ok(runner([*engine.base(), "from", "--pull-never", tag], timeout=600), f"buildah from {tag}")
    name = made.strip().splitlines()[-1]
    try:
        return runner([*engine.base(), "run", "--isolation", engine.isolation or "chroot", name, "--", *argv],
                      timeout=600)
    finally:
        runner([*engine.base(), "rm", name], timeout=120)


def packages(engine: Engine, tag: str, runner=run) -> dict[str, dict[str, int]]:
    """{venv: {distribution: bytes}} for each of VENVS the image has (podman runs through buildah)."""
    if engine.name == "podman":
        exe = shutil.which("buildah")
        if exe is None:
            raise EngineError("measuring inside an image takes buildah or docker here; next: apt-get install buildah")
        engine = Engine("buildah", exe, engine.storage_driver, engine.storage_root, engine.isolation)
    found = {}
    for venv in VENVS:
        done = _in_image(engine, tag, [f"{venv}/bin/python", "-c", MEASURE], runner)
        if done is not None and done.ok:
            found[venv] = dict(sorted(json.loads(done.stdout.strip().splitlines()[-1]).items(),
                                      key=lambda kv: -kv[1]))
    return found


def measure(engine: Engine, tag: str) -> ImageSizes:
    return ImageSizes(tag, layers(engine, tag), packages(engine, tag))


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"


def text(sizes: ImageSizes, top: int = 15) -> str:
    """The breakdown as a user reads it: layers by size, then each venv's largest distributions."""
    lines = [f"{sizes.tag}: {_mb(sizes.total)} in {len(sizes.layers)} layers"]
    for layer in sorted(sizes.layers, key=lambda x: -x.size):
        if layer.size:
            step = re.sub(r"\s+", " ", re.sub(r"^/bin/sh -c (#\(nop\) )?", "", layer.created_by)).strip()
            lines.append(f"  {_mb(layer.size):>10}  {step[:110]}")
    for venv, dists in sizes.packages.items():
        lines.append(f"{venv}: {_mb(sum(dists.values()))} in {len(dists)} distributions")
        lines += [f"  {_mb(n):>10}  {name}" for name, n in list(dists.items())[:top]]
        rest = list(dists.values())[top:]
        if rest:
            lines.append(f"  {_mb(sum(rest)):>10}  {len(rest)} others")
    return "\n".join(lines)
