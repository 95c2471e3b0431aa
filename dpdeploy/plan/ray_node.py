"""A Ray cluster node on a provisioned host: the `ray start` its systemd unit runs, from the host's plan.

Ansible's ray_cluster role asks here (on the controller) and only renders the answer into
``dpdeploy-ray.service``; the rules live once, in this module:

- which ``ray``: ``<plan prefix>/bin/ray``, the DensePose env of the plan's profile (the same env
  ``invoke setup --profile cpu-ray`` makes), refused for a profile without the matrix's ``ray`` extra;
- the GPUs advertised: ``auto`` = the plan's GPUs when the plan runs DensePose on CUDA, else 0 (a
  CPU env on a GPU host must not draw ``num_gpus=1`` actors it cannot serve); an explicit count
  above 0 for a CPU plan is refused; CPUs: ``auto`` = Ray's own count (no flag);
- head (``--head --port``, dashboard off unless asked) or worker (``--address HEAD:PORT``),
  ``--block`` (systemd supervises the process), usage stats off;
- the unit's environment: DPDEPLOY_HOME, the project on PYTHONPATH (actors import dpdeploy, as
  ``invoke predict`` gives its worker), headless matplotlib.

    python3 -m dpdeploy.plan.ray_node --plan "$(bootstrap.py plan --json --profile cpu-ray)" --head
    python3 -m dpdeploy.plan.ray_node --plan @plan.json --address head.example.org:6379
    <env>/bin/python -m dpdeploy.plan.ray_node --alive head.example.org:6379   # the verify step
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

DEFAULT_PORT = 6379          # Ray's own default GCS port
RAY_EXTRA = "ray"            # the matrix's extras group that puts Ray into an env
UNIT = "dpdeploy-ray.service"


class RayNodeError(ValueError):
    """A node the engine refuses to describe (no Ray in the profile, GPUs the env cannot use, bad values)."""


def _count(value: str | int, what: str) -> Optional[int]:
    """'auto' -> None; a whole number >= 0 -> itself; anything else refused."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif str(value).strip().lower() == "auto":
        return None
    elif str(value).strip().isdigit():
        number = int(str(value).strip())
    else:
        raise RayNodeError(f"{what} {value!r}: give auto or a whole number of at least 0")
    if number < 0:
        raise RayNodeError(f"{what} {value!r}: give auto or a whole number of at least 0")
    return number


def node(plan: dict[str, Any], *, head: bool, address: str = "", port: int = DEFAULT_PORT,
         num_gpus: str | int = "auto", num_cpus: str | int = "auto", object_store_mb: int = 0,
         dashboard: bool = False, metrics_port: int = 0, node_ip: str = "", project_dir: str = "",
         matrix: Any = None) -> dict[str, Any]:
    """What the host's unit runs: the ray binary, the `ray start` argv, its environment, and why."""
    from dpdeploy.plan import matrix as matrix_mod      # here: --alive runs in the env, without the matrix

    matrix = matrix or matrix_mod.load()
    name = str(plan.get("profile", ""))
    try:
        profile = matrix.profile(name)
    except (KeyError, ValueError) as err:
        raise RayNodeError(f"the plan's profile {name!r} is not in env/matrix.yml ({err})") from None
    if RAY_EXTRA not in profile.extras:
        with_ray = [p for p in matrix.profiles if RAY_EXTRA in matrix.profile(p).extras]
        raise RayNodeError(f"profile {name} has no Ray (its env lacks the matrix's extras.{RAY_EXTRA}); "
                           f"deploy a profile with extras: [{RAY_EXTRA}] ({', '.join(with_ray) or 'none'})")
    if not 0 < port < 65536:
        raise RayNodeError(f"port {port}: give a TCP port from 1 to 65535")
    if metrics_port and not 0 < metrics_port < 65536:
        raise RayNodeError(f"metrics port {metrics_port}: give a TCP port from 1 to 65535, or 0 for none")
    if object_store_mb < 0:
        raise RayNodeError(f"object store {object_store_mb} MB: give a size in MB, or 0 for Ray's default")
    if not head and not address:
        raise RayNodeError("a worker needs the head's address (HOST:PORT)")
    if not head and ":" not in address:
        address = f"{address}:{port}"
    prefix = str(plan.get("prefix", ""))
    if not prefix:
        raise RayNodeError("the plan names no env prefix")
    on_cuda = plan.get("device") == "cuda"
    gpus_seen = len(plan.get("gpus") or ())
    reasons = [f"ray from the {name} env: {prefix}/bin/ray"]
    wanted_gpus = _count(num_gpus, "num_gpus")
    if wanted_gpus is None:
        gpus = gpus_seen if on_cuda else 0
        reasons.append(f"num_gpus={gpus}: " + (f"the plan runs DensePose on CUDA with {gpus_seen} GPU(s)" if on_cuda
                       else f"the plan runs DensePose on the CPU here (profile {name}"
                       + (f"; {gpus_seen} GPU(s) seen, not usable by this env)" if gpus_seen else ")")))
    elif wanted_gpus > 0 and not on_cuda:
        raise RayNodeError(f"num_gpus {wanted_gpus}: the plan runs DensePose on the CPU with profile {name}; "
                           "GPU actors would land on an env that cannot use a GPU (deploy a CUDA profile with Ray)")
    else:
        gpus = wanted_gpus
        reasons.append(f"num_gpus={gpus}: as asked")
    cpus = _count(num_cpus, "num_cpus")
    reasons.append(f"num_cpus={cpus}: as asked" if cpus is not None else "num_cpus: Ray counts the host's CPUs")
    ray = f"{prefix}/bin/ray"
    argv = [ray, "start", "--block"]
    if head:
        argv += ["--head", f"--port={port}", f"--include-dashboard={'true' if dashboard else 'false'}"]
    else:
        argv += [f"--address={address}"]
    if node_ip:
        argv.append(f"--node-ip-address={node_ip}")
    argv.append(f"--num-gpus={gpus}")
    if cpus is not None:
        argv.append(f"--num-cpus={cpus}")
    if object_store_mb:
        argv.append(f"--object-store-memory={object_store_mb * 2**20}")
    if metrics_port:
        argv.append(f"--metrics-export-port={metrics_port}")
    argv.append("--disable-usage-stats")
    environment = {"DPDEPLOY_HOME": str(plan.get("home", "")), "MPLBACKEND": "Agg",
                   "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{prefix}/bin:/usr/local/bin:/usr/bin:/bin"}
    if project_dir:
        environment["PYTHONPATH"] = project_dir
    return {"role": "head" if head else "worker", "profile": name, "prefix": prefix, "ray": ray,
            "address": "" if head else address, "port": port, "num_gpus": gpus, "num_cpus": cpus,
            "argv": argv, "exec_start": shlex.join(argv), "exec_stop": shlex.join([ray, "stop"]),
            "environment": environment, "unit": UNIT, "reasons": reasons}


def alive(address: str) -> dict[str, Any]:
    """The live nodes of the cluster at ``address`` and what they advertise (run with the env's Python)."""
    import ray

    ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
    finally:
        ray.shutdown()
    rows = [{"address": n.get("NodeManagerAddress", ""), "cpus": n.get("Resources", {}).get("CPU", 0),
             "gpus": n.get("Resources", {}).get("GPU", 0)} for n in nodes]
    return {"alive": len(rows), "cpus": sum(r["cpus"] for r in rows), "gpus": sum(r["gpus"] for r in rows),
            "nodes": sorted(rows, key=lambda r: r["address"])}


def _read_plan(text: str) -> dict[str, Any]:
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    try:
        plan = json.loads(raw)
    except json.JSONDecodeError as err:
        raise RayNodeError(f"--plan is not JSON ({err})") from None
    if not isinstance(plan, dict):
        raise RayNodeError("--plan is not a JSON object (bootstrap.py plan --json)")
    return plan


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m dpdeploy.plan.ray_node", description=__doc__.splitlines()[0])
    parser.add_argument("--plan", help="the host's plan: JSON text, or @file (bootstrap.py plan --json)")
    role = parser.add_mutually_exclusive_group(required=True)
    role.add_argument("--head", action="store_true", help="this host is the head")
    role.add_argument("--alive", metavar="HOST:PORT", help="list the live nodes of that cluster (the env's Python)")
    role.add_argument("--address", default="", help="a worker: the head's HOST[:PORT]")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="the head's GCS port")
    parser.add_argument("--num-gpus", default="auto", help="GPUs to advertise: auto (the plan's) or a number")
    parser.add_argument("--num-cpus", default="auto", help="CPUs to advertise: auto (Ray counts) or a number")
    parser.add_argument("--object-store-mb", type=int, default=0, help="object store size in MB (0: Ray's default)")
    parser.add_argument("--dashboard", action="store_true", help="start the dashboard on the head")
    parser.add_argument("--metrics-port", type=int, default=0, help="Prometheus metrics port (0: none)")
    parser.add_argument("--node-ip", default="", help="this node's IP address for Ray (empty: Ray's choice)")
    parser.add_argument("--project-dir", default="", help="the project on the host (put on PYTHONPATH)")
    args = parser.parse_args(argv)
    if args.alive:
        print(json.dumps(alive(args.alive), sort_keys=True))
        return 0
    if not args.plan:
        parser.error("--plan is required with --head or --address")
    try:
        answer = node(_read_plan(args.plan), head=args.head, address=args.address, port=args.port,
                      num_gpus=args.num_gpus, num_cpus=args.num_cpus, object_store_mb=args.object_store_mb,
                      dashboard=args.dashboard, metrics_port=args.metrics_port, node_ip=args.node_ip,
                      project_dir=args.project_dir)
    except ValueError as err:   # RayNodeError, MatrixError
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(answer, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
