"""DensePose as an HTTP service on Ray Serve, inside the deployed env; `invoke serve` runs it.

    <prefix>/bin/python -m dpdeploy.inenv.serve_app [--host 127.0.0.1] [--port 8000] [--replicas 1]
        [--max-batch-size 8] [--batch-wait-ms 10] [--max-queue 16] [--max-body-mb 20]
        [--address auto|HOST:PORT] <predict_worker's model arguments>

Each replica loads the SAME predictor the pipelined worker uses (dpdeploy/inenv/model.py); the
forward pass is a ``@serve.batch`` method, so requests that arrive together share one batch.

- ``POST /v1/densepose``: the image as the body (any type Pillow reads) or as the ``image`` part
  of a multipart form. ``?overlay=1`` adds the first visualizer's PNG (base64), ``?iuv=1`` the
  IUV arrays (an .npz, base64, the same arrays as iuv.npz). Answer: JSON with persons, boxes,
  scores and the body parts per person.
- ``GET /healthz``: 200 once the model is loaded.
- Bad input: 400 with the one-line reason the CLI gives; a body over --max-body-mb: 413; more than
  --max-queue requests in a replica: 503 with Retry-After; a wrong or missing token: 401. An
  error while inferring answers 500 with one line; the replica stays up.
- The token (when set) comes from the environment (DPDEPLOY_SERVE_TOKEN), never the command line.

Prints `{"event": "serving", "url": ...}` once it answers, then runs until SIGINT / SIGTERM, when
it shuts Serve (and a local Ray it started) down.
"""

import argparse
import asyncio
import base64
import hmac
import io
import os
import signal
import sys
import tempfile
import threading
import time
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Optional, Sequence

TOKEN_ENV = "DPDEPLOY_SERVE_TOKEN"
SYNTHETIC_NOTE = "synthetic checkpoint: a pipeline check, not a model; its persons mean nothing"


class BadRequest(Exception):
    """A request the service refuses: (HTTP status, one-line reason)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


DRAIN_FACTOR = 8   # an oversize body up to this many times the limit is read (and dropped) before the 413

def split_args(argv: Optional[Sequence[str]] = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="python -m dpdeploy.inenv.serve_app", add_help=False, allow_abbrev=False)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--batch-wait-ms", type=float, default=10.0)
    p.add_argument("--max-queue", type=int, default=16, help="requests one replica holds before answering 503")
    p.add_argument("--max-body-mb", type=float, default=20.0)
    p.add_argument("--address", default="", help="Ray cluster to join; default: a local Ray on 127.0.0.1")
    p.add_argument("--num-cpus", type=int, default=0, help="CPUs of a local Ray (default: replicas + 1)")
    p.add_argument("--object-store-mb", type=int, default=500)
    return p.parse_known_args(list(sys.argv[1:] if argv is None else argv))


def model_args(rest: Sequence[str]) -> argparse.Namespace:
    """predict_worker's arguments (model, weights, device, ...) without inputs or an output folder."""
    from dpdeploy.inenv import predict_worker

    return predict_worker.parse_args([*rest, "--out", tempfile.gettempdir(), "--", "request"])


def image_bytes(content_type: str, body: bytes) -> bytes:
    """The image in a request body: the body itself, or the ``image`` (else first file) part of a
    multipart form."""
    if not content_type.lower().startswith("multipart/form-data"):
        return body
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    if not message.is_multipart():
        raise BadRequest(400, "malformed multipart body: send the image as the body, or as the 'image' form field")
    parts = [p for p in message.iter_parts() if p.get_content_disposition() == "form-data"]
    chosen = next((p for p in parts if p.get_param("name", header="content-disposition") == "image"), None)
    chosen = chosen or next((p for p in parts if p.get_filename()), None)
    if chosen is None:
        raise BadRequest(400, "multipart form without an 'image' field: send the image as the 'image' form field")
    return chosen.get_payload(decode=True) or b""


def describe(arrays: dict[str, Any], described: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON answer's persons part: count, per person box/score/parts, persons per body part."""
    parts: dict[str, int] = {}
    for person in described:
        for part in person["parts"]:
            parts[str(part)] = parts.get(str(part), 0) + 1
    return {"persons": len(described), "instances": described, "body_parts": parts}


def flag(value: Optional[str]) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


def build_app(own: argparse.Namespace, rest: list[str], token: str):
    """The Serve application (a FastAPI ingress over the batched model)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from ray import serve

    api = FastAPI(title="DensePose (dpdeploy)")
    max_body = int(own.max_body_mb * 2**20)

    @serve.deployment
    @serve.ingress(api)
    class DensePoseService:
        def __init__(self) -> None:
            import torch

            from dpdeploy.inenv import predict_worker
            from dpdeploy.inenv.model import Model

            self.args = model_args(rest)
            torch.set_num_threads(self.args.threads or 1)
            self.model = Model(self.args)
            self.run = predict_worker.Run(self.model, self.args)
            self.inflight = 0
            self.lock = threading.Lock()
            self.infer_batch.set_max_batch_size(own.max_batch_size)
            self.infer_batch.set_batch_wait_timeout_s(own.batch_wait_ms / 1000.0)
            self.synthetic = self.args.weights == "synthetic"

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
        async def infer_batch(self, prepared: list[Any]) -> list[Any]:
            from dpdeploy.inenv import pipeline
            from dpdeploy.inenv.model import is_oom

            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, pipeline.split_infer, self.run.infer, prepared, is_oom)

        @api.get("/healthz")
        async def healthz(self) -> dict[str, Any]:
            return {"status": "ok", "weights": "synthetic" if self.synthetic else "real",
                    "device": self.args.device, "max_batch_size": own.max_batch_size}

        @api.post("/v1/densepose")
        async def densepose(self, request: Request):
            with self.lock:
                if self.inflight >= own.max_queue:
                    return JSONResponse({"error": f"busy: {self.inflight} requests queued in this replica "
                                                  f"(limit {own.max_queue}); retry shortly"},
                                        status_code=503, headers={"Retry-After": "1"})
                self.inflight += 1
            try:
                return await self._answer(request)
            except BadRequest as exc:
                return JSONResponse({"error": exc.reason}, status_code=exc.status)
            except Exception as exc:   # never crash the replica: one line, 500
                return JSONResponse({"error": f"inference failed: {type(exc).__name__}: "
                                              f"{' '.join(str(exc).split())[:200]}"}, status_code=500)
            finally:
                with self.lock:
                    self.inflight -= 1

        async def _answer(self, request: Request):
            from dpdeploy.inenv import images, predict_worker

            if token and not hmac.compare_digest(request.headers.get("authorization", ""), f"Bearer {token}"):
                raise BadRequest(401, "missing or wrong token: send 'Authorization: Bearer <token>'")
            length = request.headers.get("content-length")
            if length and length.isdigit() and int(length) > max_body:
                if int(length) <= DRAIN_FACTOR * max_body:   # read it, discarded: the client then reads the
                    async for _ in request.stream():        # 413 instead of a reset while it still sends
                        pass
                raise BadRequest(413, f"body of {int(length)} bytes is over the limit of {max_body} bytes")
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_body:
                    raise BadRequest(413, f"body over the limit of {max_body} bytes")
            data = image_bytes(request.headers.get("content-type", ""), body)
            loop = asyncio.get_running_loop()
            t0 = time.perf_counter()
            try:
                prepared = await loop.run_in_executor(None, self.run._prepare, images.load_bytes, data)
            except images.ImageError as exc:
                raise BadRequest(400, str(exc)) from None
            instances = await self.infer_batch(prepared)
            if isinstance(instances, BaseException):
                raise instances
            t1 = time.perf_counter()
            arrays, described = self.run._arrays(instances)
            answer = {**describe(arrays, described), "size": list(prepared.loaded.size),
                      "original_size": list(prepared.loaded.original_size), "format": prepared.loaded.format,
                      "weights": "synthetic" if self.synthetic else "real",
                      "notes": list(prepared.loaded.notes) + ([SYNTHETIC_NOTE] if self.synthetic else []),
                      "timings": {"load_infer_s": round(t1 - t0, 4)}}
            if flag(request.query_params.get("overlay")):
                answer["overlay_png_base64"] = await loop.run_in_executor(None, self._overlay, prepared, instances,
                                                                          answer["notes"])
            if flag(request.query_params.get("iuv")):
                import numpy as np

                buf = io.BytesIO()
                np.savez_compressed(buf, **arrays)
                answer["iuv_npz_base64"] = base64.b64encode(buf.getvalue()).decode("ascii")
            predict_worker._close_figures()
            return answer

        def _overlay(self, prepared, instances, notes: list[str]) -> str:
            import numpy as np

            from dpdeploy.inenv import images, predict_worker

            rgb = prepared.loaded.rgb
            gray = rgb.mean(axis=2, dtype=np.float32).round().astype(np.uint8)
            with self.model.draw_lock:
                try:
                    overlay = self.model.draw(self.args.vis[0], np.repeat(gray[:, :, None], 3, axis=2), instances, notes)
                finally:
                    predict_worker._close_figures()
            return base64.b64encode(images.png_bytes(overlay)).decode("ascii")

    gpu = model_args(rest).device.startswith("cuda")
    return DensePoseService.options(
        num_replicas=own.replicas, max_ongoing_requests=own.max_queue + 4, max_queued_requests=own.max_queue * 4,
        ray_actor_options={"num_cpus": 1, "num_gpus": 1 if gpu else 0,
                           "runtime_env": {"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", ""),
                                                        "MPLBACKEND": "Agg"}}},
    ).bind()


def main(argv: Optional[Sequence[str]] = None) -> int:
    from dpdeploy.inenv.predict_worker import emit

    own, rest = split_args(argv)
    token = os.environ.get(TOKEN_ENV, "")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    ours = False
    try:
        import ray
        from ray import serve

        if own.address:
            ray.init(address=own.address, include_dashboard=False, log_to_driver=False)
        else:
            os.environ.pop("RAY_ADDRESS", None)
            ray.init(num_cpus=own.num_cpus or own.replicas + 1, object_store_memory=own.object_store_mb * 2**20,
                     include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
            ours = True
        serve.start(http_options={"host": own.host, "port": own.port})
        serve.run(build_app(own, rest, token), name="densepose", route_prefix="/")
    except Exception as exc:
        emit({"event": "fatal", "error": f"serve: {type(exc).__name__}: {' '.join(str(exc).split())}"[:400]})
        _shutdown(ours)
        return 3
    emit({"event": "serving", "url": f"http://{own.host}:{own.port}/v1/densepose", "replicas": own.replicas,
          "max_batch_size": own.max_batch_size, "batch_wait_ms": own.batch_wait_ms, "token": bool(token)})
    while not stop.wait(0.5):
        pass
    _shutdown(ours)
    emit({"event": "stopped"})
    return 0


def _shutdown(ours: bool) -> None:
    try:
        from ray import serve

        serve.shutdown()
    except Exception:
        pass
    if ours:
        import ray

        ray.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
