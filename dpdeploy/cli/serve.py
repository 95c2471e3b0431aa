"""`invoke serve`: DensePose as an HTTP service (Ray Serve, dynamic batching)."""
import sys

from invoke import Exit, task

from dpdeploy import runner
from dpdeploy.inenv.synthetic import cache_name
from dpdeploy.inference import predict as core, serve as service
from dpdeploy.records.run import RunRecord
from dpdeploy.cli import common


@task(help={
    "host": "Address to listen on (default 127.0.0.1; any other needs --token).",
    "port": "TCP port (default 8000).",
    "replicas": "Model replicas (Ray Serve deployment; each loads the model once).",
    "max_batch_size": "Most requests one forward pass takes (@serve.batch; default 8).",
    "batch_wait_ms": "How long a replica waits to fill a batch (default 10 ms).",
    "max_queue": "Requests one replica holds; beyond that 503 with Retry-After (default 16).",
    "max_body_mb": "Largest request body; beyond that 413 (default 20 MB).",
    "token": "Bearer token clients must send (required with a --host other than loopback).",
    "address": "Ray cluster to join, auto or HOST:PORT (default: a local Ray on 127.0.0.1).",
    "model": "Model from env/matrix.yml (default: the matrix's default model).",
    "weights": "Checkpoint file, or 'synthetic' for a pipeline check (default: the cached `invoke weights` file).",
    "device": "cpu or cuda (default: the plan's device).",
    "prefix": "The DensePose env with Ray (default: the plan's prefix; invoke setup --profile cpu-ray, or cu130-ray on GPUs).",
    "vis": "Overlay drawn for ?overlay=1 (default dp_contour).",
    "min_score": "Minimum detection score (default 0.8).",
    "max_detections": "Cap on persons per image (default: the config's; 3 with synthetic weights).",
})
def serve(c, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1, max_batch_size: int = 8,
          batch_wait_ms: str = "10", max_queue: int = 16, max_body_mb: str = "20", token: str = "",
          address: str = "", model: str = "", weights: str = "", device: str = "", prefix: str = "",
          vis: str = "dp_contour", min_score: str = "0.8", max_detections: int = 0) -> None:
    """Serve DensePose over HTTP: POST /v1/densepose (image) -> JSON; GET /healthz. See docs/scale.md."""
    with common.user_errors():
        try:
            opts = service.ServeOptions(host, port, replicas, max_batch_size, float(batch_wait_ms), max_queue,
                                        float(max_body_mb), token, address)
        except ValueError:
            raise core.PredictError(f"--batch-wait-ms {batch_wait_ms} / --max-body-mb {max_body_mb}: "
                                    "not numbers") from None
        service.check(opts)
        s = common.settings(c, prefix=prefix)
        env_prefix, default_device, host_gpus = common.predict_target(s, prefix, device)
        matrix = common.load_matrix(s)
        name = model or matrix.default_model
        if name not in matrix.models:
            raise core.PredictError(f"--model {name}: not in env/matrix.yml; choose from {', '.join(matrix.models)}")
        core.check_device(device or default_device, len(host_gpus))
        core.check_engine("ray", address, "", 0)
        python = core.env_python(env_prefix)
        core.check_env_has_ray(env_prefix)
        resolved = core.resolve_weights(weights, core.model_specs(matrix)[name], s.home_path)
        req = core.Request(inputs=[], out="", model=name, python=python, weights=resolved, vis=core.parse_vis(vis),
                           min_score=core.parse_score(min_score), device=device or default_device,
                           config_dirs=core.config_dirs(s.home_path, env_prefix), max_detections=max_detections,
                           synthetic_cache=str(s.home_path / "cache" / "weights" / cache_name(name)))
    record = RunRecord.create(s.home_path, "serve")
    log = record.log_path("serve")
    print(f"serve: starting Ray Serve on {host}:{port} ({replicas} replica(s), batches of up to {max_batch_size}); "
          f"log {log}", file=sys.stderr)

    def line(text: str) -> None:
        event = core.parse_event(text)
        if event and event["event"] == "serving":
            print(f"serve: listening on {event['url']} (GET /healthz); Ctrl-C stops it", file=sys.stderr)
        elif event and event["event"] == "fatal":
            print(f"serve: {event['error']}; see {log}", file=sys.stderr)

    with common.interruptible("the service was stopped"):
        code = runner.stream(service.command(req, opts), log_path=str(log), env=service.env(opts), echo=line)
    if code:
        raise Exit(code=1)
