"""`invoke predict`, the parent side: resolve weights and config, run the in-env worker once
for all images, follow its progress lines, keep the summary (docs/internals.md, "Predict outputs").

The worker (dpdeploy/inenv/predict_worker.py) runs in the DensePose env; this side needs
no torch. summary.json is rewritten (atomically) after every image, so a run that dies half
way keeps what it finished.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from dpdeploy import paths
from dpdeploy import runner
from dpdeploy.build.wheels import ENV_CONFIGS
from dpdeploy.fsutil import atomic_write_text
from dpdeploy.inference.inputs import collect, deal, split_specs, work_estimate
from dpdeploy.records import predict_summary
from dpdeploy.records.predict_summary import PredictSummary
from dpdeploy.host.probe import cpu_has_bf16, parse_meminfo_mib, usable_cpus
from dpdeploy.inenv.model import PRECISIONS
from dpdeploy.inenv.outputs import DEFAULT_MAX_SIZE, DEFAULT_VIS, VISUALIZERS, unique_stems

SYNTHETIC = "synthetic"
# Detections per image with synthetic weights unless --max-detections says otherwise: every
# proposal scores 0.95 there, and each costs DensePose-head and drawing time (~28 s/image on
# this 2-core CPU with the config's 100, measured).
SYNTHETIC_MAX_DETECTIONS = 3


class PredictError(Exception):
    """A request that cannot run: what, why, next step (exit status 2)."""


@dataclass
class Request:
    inputs: list[str]
    out: str
    model: str
    python: str                     # <prefix>/bin/python of the DensePose env
    weights: str                    # checkpoint path or "synthetic"
    vis: list[str] = field(default_factory=lambda: list(DEFAULT_VIS))
    min_score: float = 0.8
    device: str = "cpu"
    config: str = ""                # the model's yaml; "" = the worker searches config_dirs
    config_dirs: list[str] = field(default_factory=list)
    synthetic_cache: str = ""
    max_size: int = DEFAULT_MAX_SIZE
    max_detections: int = 0         # 0 = the config's (SYNTHETIC_MAX_DETECTIONS for synthetic)
    stems: list[str] = field(default_factory=list)   # output folder per input ([]: from the file names)
    precision: str = "fp32"
    batch_size: int = 0             # 0 = the worker's default for its device
    every: int = 1                  # videos: every Nth frame
    devices: list[str] = field(default_factory=list)  # one worker each ([]: one on ``device``)
    engine: str = "local"           # local: the pipelined worker(s); ray: Ray Data (dpdeploy/inenv/ray_batch.py)
    address: str = ""               # engine ray: the cluster to join ("" = a local Ray on 127.0.0.1)
    workers: int = 0                # engine ray: actors (0 = one per GPU, else per CPU); local: CPU workers

    def __post_init__(self) -> None:
        if not self.stems:
            self.stems = unique_stems([Path(i).name for i in self.inputs])
        if not self.devices:
            self.devices = [self.device]

    @property
    def weights_kind(self) -> str:
        return SYNTHETIC if self.weights == SYNTHETIC else "real"


def parse_vis(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in names if v not in VISUALIZERS]
    if unknown or not names:
        raise PredictError(f"--vis {text!r}: unknown {', '.join(unknown) or '(empty)'}; "
                           f"choose from {', '.join(VISUALIZERS)}")
    return names


def parse_score(text: str) -> float:
    try:
        score = float(text)
    except ValueError:
        raise PredictError(f"--min-score {text!r}: not a number (e.g. 0.8)") from None
    if not 0.0 <= score <= 1.0:
        raise PredictError(f"--min-score {text}: must be between 0 and 1")
    return score


def model_specs(matrix: Any) -> dict[str, Any]:
    """Each model of the matrix: name -> weights.ModelSpec (what its cached file is checked against)."""
    from dpdeploy.inference import weights as w

    return {name: w.ModelSpec.from_matrix(matrix, name) for name in matrix.models}


def resolve_weights(flag: str, spec: Any, home: Path) -> str:
    """--weights PATH or 'synthetic', else the cached file `invoke weights` wrote, used only while it
    still verifies (``weights.cached``: the matrix's sha256, or the hash recorded on first use)."""
    from dpdeploy.inference import weights as w

    if flag == SYNTHETIC:
        return SYNTHETIC
    if flag:
        path = Path(flag).expanduser()
        if not path.is_file():
            raise PredictError(f"--weights {flag}: no such file")
        return str(path.resolve())
    path = w.final_path(home, spec.name)
    if not path.is_file():
        raise PredictError(f"no weights for {spec.name}: run invoke weights, or pass --weights synthetic for a "
                           f"pipeline check (looked for {path})")
    hit, why = w.cached_why(home, spec)
    if hit is None:
        raise PredictError(f"the cached weights {path} no longer verify ({why}): the file "
                           f"changed after `invoke weights` checked it; next: remove it and run invoke weights")
    return str(path)


# Free space below which an output folder is refused (a few images' PNGs, IUV arrays and JSON).
MIN_FREE_MIB = 64


def check_writable(folder: Path, what: str) -> None:
    """Refuse a folder that is a file, cannot be created or written, or sits on a full disk;
    probes with a temp file it removes, so nothing is left behind."""
    if folder.exists() and not folder.is_dir():
        raise PredictError(f"{what} {folder}: is a file, not a folder; pass a folder (created if missing)")
    base = folder
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise PredictError(f"{what} {folder}: {base} is a file, so the folder cannot be created; pass another folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".dpdeploy-probe-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise PredictError(f"{what} {folder}: cannot write in {base} ({exc.strerror or exc}); "
                           "pass a folder you can write to") from None
    free = shutil.disk_usage(base).free // 2**20
    if free < MIN_FREE_MIB:
        raise PredictError(f"{what} {folder}: only {free} MiB free on {base} (needs {MIN_FREE_MIB} MiB); "
                           "free some space or pass a folder on another disk")


def check_writable_file(path: Path, what: str) -> None:
    """Refuse a file path that is a folder or whose folder ``check_writable`` refuses."""
    if path.is_dir():
        raise PredictError(f"{what} {path}: is a folder, not a file; pass a file path such as {path / 'report.xml'}")
    if path.exists() and not os.access(path, os.W_OK):
        raise PredictError(f"{what} {path}: cannot be replaced (not writable); pass another file path")
    check_writable(path.parent, f"{what} {path}: its folder")


def check_device(device: str, gpus: int) -> None:
    """Refuse a cuda device this host does not have (before the model takes seconds to load)."""
    if not device.startswith("cuda"):
        return
    if gpus == 0:
        raise PredictError(f"--device {device}: this host has no NVIDIA GPU (none found by the probe); "
                           "use --device cpu")
    index = device.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= gpus):
        raise PredictError(f"--device {device}: this host has {gpus} GPU(s), cuda:0 to cuda:{gpus - 1}")


def check_precision(precision: str, device: str, gpus: Sequence[Any] = (), has_bf16: Callable[[], bool] = cpu_has_bf16) -> None:
    """Refuse a precision the device cannot serve, before the model loads (``gpus``: the host's,
    with their compute capability where known)."""
    if precision not in PRECISIONS:
        raise PredictError(f"--precision {precision}: choose from {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return
    if not device.startswith("cuda"):
        if precision == "fp16":
            raise PredictError("--precision fp16 on cpu: torch has no fast fp16 kernels for CPUs; use --precision "
                               "bf16 (CPUs with avx512_bf16 / amx) or fp32")
        if not has_bf16():
            raise PredictError("--precision bf16 on cpu: this CPU lists no avx512_bf16 / amx_bf16 instructions, so "
                               "bf16 would be slower than fp32; use --precision fp32")
    elif precision == "bf16":
        old = [g for g in gpus if _capability(g) is not None and _capability(g) < 8.0]
        if old:
            raise PredictError(f"--precision bf16: {old[0].name} (compute capability {old[0].compute_capability}) has "
                               "no bf16; use --precision fp16")


def _capability(gpu: Any) -> Optional[float]:
    try:
        return float(gpu.compute_capability)
    except (TypeError, ValueError):
        return None


def parse_gpus(text: str, device: str, gpus: int) -> list[str]:
    """The devices to run one worker each on: ``--gpus 0,2`` -> cuda:0, cuda:2; none given with
    --device cuda -> every GPU the host has; else the one device."""
    if text:
        if not device.startswith("cuda"):
            raise PredictError(f"--gpus {text}: needs --device cuda")
        picked = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in picked if not t.isdigit() or int(t) >= gpus]
        if bad or not picked or len(set(picked)) != len(picked):
            raise PredictError(f"--gpus {text}: this host has {gpus} GPU(s), 0 to {gpus - 1}; pass distinct "
                               "indices, e.g. --gpus 0,1")
        return [f"cuda:{t}" for t in picked]
    if device == "cuda" and gpus > 1:
        return [f"cuda:{i}" for i in range(gpus)]
    return [device]


def config_dirs(home: Path, prefix: str = "") -> list[str]:
    """DensePose config folders: the env's own copy (the build step installs it, so an env that
    travels without its source, e.g. a container's, still has them), then the kept sources."""
    dirs = [Path(prefix) / ENV_CONFIGS] if prefix else []
    dirs += sorted((home / "cache" / "src").glob("*/projects/DensePose/configs"))
    return [str(p) for p in dirs if p.is_dir()]


ENGINES = ("local", "ray")


def check_engine(engine: str, address: str, gpu_list: str, workers: int) -> None:
    """Refuse engine options that do not go together (before anything loads)."""
    if engine not in ENGINES:
        raise PredictError(f"--engine {engine}: choose from {', '.join(ENGINES)}")
    if engine != "ray" and address:
        raise PredictError("--address: needs --engine ray")
    if engine == "ray" and gpu_list:
        raise PredictError("--gpus with --engine ray: Ray places one actor per GPU itself; drop --gpus "
                           "(--workers N caps the actors)")
    if workers < 0:
        raise PredictError(f"--workers {workers}: 0 (one per GPU, else per CPU) or more")
    if address and address != "auto" and not re.fullmatch(r"(ray://)?[A-Za-z0-9._-]+:\d{1,5}", address):
        raise PredictError(f"--address {address}: use auto or HOST:PORT of the Ray head (e.g. 10.0.0.5:6379)")


def check_env_has_ray(prefix: str) -> None:
    """The env must have Ray (profile cpu-ray or cu130-ray: `extras: [ray]`)."""
    if not any(Path(prefix).glob("lib/python3*/site-packages/ray/__init__.py")):
        raise PredictError(f"--engine ray: the env at {prefix} has no Ray; deploy one with it "
                           "(invoke setup --profile cpu-ray, or cu130-ray on GPUs) or pass --prefix to such an env")


def env_python(prefix: str) -> str:
    python = Path(prefix) / "bin" / "python"
    if not python.exists():
        raise PredictError(f"no DensePose environment at {prefix} ({python} missing): run invoke setup, "
                           f"or pass --prefix to an env with detectron2 and DensePose")
    return str(python)


# A CPU worker's peak memory with the R50-FPN model and a batch of 2 (benchmarks/predict_bench.py).
CPU_WORKER_MIB = 2048


def shards(req: Request) -> list[tuple[str, list[int]]]:
    """(device, 0-based input indices) per worker: the inputs dealt over the devices so each
    gets about the same work (deal, by each input's aspect ratio; videos first)."""
    if req.engine == "ray":   # Ray schedules the actors itself: one driver for every input
        return [(req.device, list(range(len(req.inputs))))]
    n = max(1, min(len(req.devices), len(req.inputs)))
    if n == 1:
        return [(req.devices[0], list(range(len(req.inputs))))]
    dealt = deal([work_estimate(path) for path in req.inputs], n)
    return [(req.devices[k], part) for k, part in enumerate(dealt)]


def model_flags(req: Request, device: str = "", threads: int = 0) -> list[str]:
    """The worker's model options (shared by predict_worker, ray_batch and serve_app)."""
    cmd = ["--model", req.model, "--weights", req.weights, "--vis", ",".join(req.vis), "--min-score", str(req.min_score),
           "--device", device or req.device, "--max-size", str(req.max_size), "--precision", req.precision]
    if req.batch_size:
        cmd += ["--batch-size", str(req.batch_size)]
    if req.every > 1:
        cmd += ["--every", str(req.every)]
    if threads:
        cmd += ["--threads", str(threads)]
    if req.config:
        cmd += ["--config", req.config]
    for folder in req.config_dirs:
        cmd += ["--config-dir", folder]
    if req.weights == SYNTHETIC:
        cmd += ["--synthetic-cache", req.synthetic_cache]
    cap = req.max_detections or (SYNTHETIC_MAX_DETECTIONS if req.weights == SYNTHETIC else 0)
    if cap:
        cmd += ["--max-detections", str(cap)]
    return cmd


def worker_command(req: Request, device: str = "", indices: Optional[Sequence[int]] = None,
                   threads: int = 0) -> list[str]:
    """The worker's command line, for all inputs or the shard ``indices`` on ``device``."""
    picked = range(len(req.inputs)) if indices is None else indices
    cmd = [req.python, "-m", "dpdeploy.inenv.predict_worker"]
    if req.engine == "ray":
        cmd = [req.python, "-m", "dpdeploy.inenv.ray_batch"] + (["--address", req.address] if req.address else []) \
            + (["--workers", str(req.workers)] if req.workers else [])
    cmd += ["--out", req.out, *model_flags(req, device, threads)]
    return cmd + ["--stems", json.dumps([req.stems[i] for i in picked]), "--", *(req.inputs[i] for i in picked)]


# glibc hands a freed block over 32 MiB back to the kernel and faults it in again on the next
# forward pass; kept in the heap instead, a CPU forward pass takes ~5% less time (docs/performance.md).
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"


def worker_env(base: Optional[dict[str, str]] = None) -> dict[str, str]:
    """The repo on PYTHONPATH (the worker is part of dpdeploy), unbuffered, headless matplotlib,
    glibc's malloc keeping large blocks (unless GLIBC_TUNABLES is set already)."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(paths.ROOT), env.get("PYTHONPATH", "")]))
    env.update(PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    env.setdefault("GLIBC_TUNABLES", MALLOC_TUNABLES)
    return env


def parse_event(line: str) -> Optional[dict[str, Any]]:
    """A worker progress line, or None for anything else (logs, warnings)."""
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def start_summary(req: Request, skipped: Sequence[str] = (), run: str = "", command: str = "") -> PredictSummary:
    """The summary before the worker starts: every input pending."""
    images = [{"input": p, "stem": s, "status": "pending"} for p, s in zip(req.inputs, req.stems, strict=True)]
    return PredictSummary(req.model, req.weights, req.weights_kind, req.device, req.out, images, list(skipped), run,
                          command)


def run(req: Request, summary: PredictSummary, log_path: Path,
        on_event: Callable[[dict[str, Any]], None] = lambda e: None,
        stream: Callable[..., int] = runner.stream) -> PredictSummary:
    """Run one worker per device on its shard of the inputs (in threads); after every progress
    line update and rewrite summary.json. A worker that dies loses only the inputs it had not
    reported: they become errors naming its device and exit status."""
    Path(req.out).mkdir(parents=True, exist_ok=True)
    predict_summary.write(req.out, summary)
    parts = shards(req)
    lock = threading.Lock()
    cpu_threads = _cpu_threads(len(parts))
    codes: list[int] = [0] * len(parts)
    summary.workers = [{"device": d, "images": len(i), "exit": None} for d, i in parts]

    def work(k: int, device: str, indices: list[int]) -> None:
        fatal: list[str] = []

        def line(text: str) -> None:
            event = parse_event(text)
            if event is None:
                return
            if "index" in event:   # the worker counts its own shard
                event = {**event, "index": indices[int(event["index"]) - 1] + 1, "total": len(req.inputs)}
            if event["event"] == "fatal":
                fatal.append(event.get("error", "the worker failed"))
            with lock:
                summary.apply(event)
                if event["event"] in ("image", "fatal", "ready"):
                    predict_summary.write(req.out, summary)
                on_event(event)

        threads = cpu_threads[k] if len(parts) > 1 and not device.startswith("cuda") else 0
        log = log_path if k == 0 else log_path.with_name(f"{log_path.stem}-{k}{log_path.suffix}")
        codes[k] = stream(worker_command(req, device, indices, threads), log_path=str(log), env=worker_env(),
                          echo=line)
        with lock:
            why = fatal[0] if fatal else f"the worker exited with status {codes[k]} before this file"
            if len(parts) > 1:
                why += f" (worker {k + 1} of {len(parts)}, on {device})"
            summary.lost(indices, why)
            summary.workers[k]["exit"] = codes[k]

    started = time.monotonic()
    pool = [threading.Thread(target=work, args=(k, d, i), daemon=True) for k, (d, i) in enumerate(parts)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    summary.finish(next((c for c in codes if c), 0), time.monotonic() - started)
    predict_summary.write(req.out, summary)
    return summary


def _cpu_threads(parts: int) -> list[int]:
    """This host's CPUs split over ``parts`` CPU workers, each at least one."""
    total = usable_cpus()
    return [max(1, total // parts + (1 if i < total % parts else 0)) for i in range(parts)]


def available_mib(meminfo: str = "/proc/meminfo") -> int:
    """MemAvailable in MiB (0 when unknown: then memory does not limit the workers)."""
    try:
        return parse_meminfo_mib(Path(meminfo).read_text(), "MemAvailable")
    except OSError:
        return 0


def cpu_workers(requested: int, inputs: int, cpus: int, available: int) -> int:
    """Worker processes on a CPU: ``requested`` (--workers), else one per core while inputs and
    memory last. Single-threaded workers side by side beat one process using every core (its
    serial parts leave cores idle): docs/performance.md has the figures."""
    if requested:
        return max(1, min(requested, inputs))
    by_memory = available // CPU_WORKER_MIB if available else cpus
    return max(1, min(inputs, cpus, by_memory))


def log_tail(log_path: Path, lines: int = 15) -> str:
    """The last lines of the worker's log that are not progress lines (for a crash message)."""
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join([t for t in text if parse_event(t) is None][-lines:])


def command_text(argv: Sequence[str], req: Request) -> str:
    """command.txt: the command as typed, then the worker command it ran."""
    import shlex

    return f"{shlex.join(argv)}\n# worker:\n{shlex.join(worker_command(req))}\n"


def write_command(folder: Path, argv: Sequence[str], req: Request) -> None:
    atomic_write_text(folder / "command.txt", command_text(argv, req))


def typed_command() -> list[str]:
    """How the user invoked us (invoke's argv), with the program shortened to its name."""
    return [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else []


def prepare(inputs: Sequence[str], *, home: Path, prefix: str, default_device: str, models: dict[str, Any],
            model: str, out: str, vis: str, weights: str, min_score: float, device: str, config: str,
            max_size: int, max_detections: int, record_folder: Callable[[], Path],
            gpus: Sequence[Any] = (), precision: str = "fp32", batch_size: int = 0, every: int = 1,
            gpu_list: str = "", engine: str = "local", address: str = "", workers: int = 0) -> tuple[Request, list[str]]:
    """Check everything a user can get wrong before anything is written (``gpus``: the host's);
    then make the record folder (``record_folder()``) and the request. Returns (request,
    skipped folder entries)."""
    from dpdeploy.inenv.synthetic import cache_name  # torch is imported only inside its functions

    if model not in models:
        raise PredictError(f"--model {model}: not in env/matrix.yml; choose from {', '.join(models)}")
    if device not in ("", "cpu", "cuda") and not device.startswith("cuda:"):
        raise PredictError(f"--device {device}: use cpu or cuda")
    check_device(device or default_device, len(gpus))
    devices = parse_gpus(gpu_list, device or default_device, len(gpus))
    check_precision(precision, device or default_device, gpus)
    if batch_size < 0 or every < 1:
        raise PredictError(f"--batch-size {batch_size} / --every {every}: the batch size is 0 (automatic) or more, "
                           "--every 1 or more")
    if max_size < 1:
        raise PredictError(f"--max-size {max_size}: the longest image side must be 1 pixel or more; "
                           f"pass e.g. --max-size 1333")
    if max_detections < 0:
        raise PredictError(f"--max-detections {max_detections}: must be 0 (the config's cap) or more")
    if config and not Path(config).is_file():
        raise PredictError(f"--config {config}: no such file")
    names = parse_vis(vis)
    specs = split_specs(inputs)
    if not specs:
        raise PredictError(f"no input given ({', '.join(map(repr, inputs))}): pass image files or folders, "
                           "e.g. invoke predict photos/")
    # what the user named must exist; a broken file found inside a folder is that file's error
    missing = [spec for spec in specs if not os.path.lexists(Path(spec).expanduser())]
    if missing:
        raise PredictError(f"no such file or folder: {', '.join(missing)}; check the path (several inputs are "
                           "separated by commas)")
    found = collect(specs)
    if not found.files:
        raise PredictError(f"no images in {', '.join(inputs)}"
                           + (f" ({len(found.skipped)} entries skipped: {found.skipped[0]}, ...)" if found.skipped else "")
                           + ": pass image files or folders holding them")
    check_engine(engine, address, gpu_list, workers)
    if engine == "local" and workers and devices[0].startswith("cuda"):
        raise PredictError(f"--workers {workers} with --device cuda: one worker runs per GPU; pick them with --gpus")
    if engine == "local" and devices == ["cpu"]:
        devices = ["cpu"] * cpu_workers(workers, len(found.files), usable_cpus(), available_mib())
    python = env_python(prefix)
    if engine == "ray":
        check_env_has_ray(prefix)
    resolved = resolve_weights(weights, models[model], home)
    if out:
        check_writable(Path(out).expanduser().absolute(), "--out")
    check_writable(home / "runs", "run records in")
    folder = record_folder()
    req = Request(
        inputs=[str(Path(f).absolute()) for f in found.files], stems=unique_stems(found.names),
        out=str(Path(out).absolute()) if out else str(folder / "predict"),
        model=model, python=python, weights=resolved, vis=names, min_score=min_score,
        device=device or default_device, config=str(Path(config).absolute()) if config else "",
        config_dirs=config_dirs(home, prefix), synthetic_cache=str(home / "cache" / "weights" / cache_name(model)),
        max_size=max_size, max_detections=max_detections, precision=precision, batch_size=batch_size, every=every,
        devices=devices, engine=engine, address=address, workers=workers,
    )
    return req, found.skipped
