"""`invoke serve`, the parent side: check the request, then run the in-env Ray Serve app
(dpdeploy/inenv/serve_app.py) in the foreground, streaming its lines, until Ctrl-C / SIGTERM."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Optional

from dpdeploy.inenv.serve_app import TOKEN_ENV   # the token travels in the env, never in argv (ps shows argv)
from dpdeploy.inference.predict import PredictError, Request, model_flags, worker_env


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    replicas: int = 1
    max_batch_size: int = 8
    batch_wait_ms: float = 10.0
    max_queue: int = 16
    max_body_mb: float = 20.0
    token: str = ""
    address: str = ""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(opts: ServeOptions) -> None:
    """Refuse options that cannot serve (exit 2, one line) before Ray starts."""
    if not 1 <= opts.port <= 65535:
        raise PredictError(f"--port {opts.port}: choose 1 to 65535")
    if opts.replicas < 1 or opts.max_batch_size < 1 or opts.max_queue < 1:
        raise PredictError("--replicas, --max-batch-size and --max-queue must be 1 or more")
    if not 0 <= opts.batch_wait_ms <= 10_000:
        raise PredictError(f"--batch-wait-ms {opts.batch_wait_ms}: choose 0 to 10000")
    if opts.max_body_mb <= 0:
        raise PredictError(f"--max-body-mb {opts.max_body_mb}: must be above 0")
    if not is_loopback(opts.host) and not opts.token:
        raise PredictError(f"--host {opts.host}: listening beyond this machine needs a token; pass --token SECRET "
                           "(clients send 'Authorization: Bearer SECRET') or keep --host 127.0.0.1")
    if opts.token and len(opts.token) < 16:
        raise PredictError("--token: use at least 16 characters (e.g. python3 -c 'import secrets; "
                           "print(secrets.token_urlsafe())')")


def command(req: Request, opts: ServeOptions) -> list[str]:
    cmd = [req.python, "-m", "dpdeploy.inenv.serve_app", "--host", opts.host, "--port", str(opts.port),
           "--replicas", str(opts.replicas), "--max-batch-size", str(opts.max_batch_size),
           "--batch-wait-ms", str(opts.batch_wait_ms), "--max-queue", str(opts.max_queue),
           "--max-body-mb", str(opts.max_body_mb)]
    if opts.address:
        cmd += ["--address", opts.address]
    return cmd + model_flags(req)


def env(opts: ServeOptions, base: Optional[dict[str, str]] = None) -> dict[str, str]:
    out = worker_env(dict(os.environ if base is None else base))
    out.pop(TOKEN_ENV, None)
    if opts.token:
        out[TOKEN_ENV] = opts.token
    return out
