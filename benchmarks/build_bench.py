"""Cold build vs wheel-cache hit, and a targeted arch list vs the profile's full list.

    .venv/bin/python benchmarks/build_bench.py --env <prefix with torch + CUDA toolchain wheels> \
        [--source <detectron2 clone or archive>] [--targeted 9.0]

All three measurements run side by side in one run, with a fresh cache; the ratios are printed.
Without --source it builds dpdeploy's own small extension (dpdeploy/build/testext_src) instead of detectron2.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dpdeploy import paths  # noqa: E402
from dpdeploy.build import cache as wheelcache  # noqa: E402
from dpdeploy.build import wheels as builder  # noqa: E402
from dpdeploy.plan import matrix as matrix_mod  # noqa: E402
from dpdeploy.host import probe  # noqa: E402
from dpdeploy.plan.resolve import resolve  # noqa: E402
from dpdeploy.plan.settings import resolve as resolve_settings  # noqa: E402
from dpdeploy.build.source import acquire  # noqa: E402
from dpdeploy.envs.site import torch_info  # noqa: E402
from dpdeploy.steps import build  # noqa: E402


def timed(fn):
    start = time.monotonic()
    out = fn()
    return time.monotonic() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", required=True, help="env prefix with torch and the CUDA toolchain wheels")
    ap.add_argument("--source", default="", help="detectron2 source (default: dpdeploy/build/testext_src)")
    ap.add_argument("--targeted", default="9.0", help="the targeted TORCH_CUDA_ARCH_LIST")
    args = ap.parse_args()

    matrix = matrix_mod.load()
    home = Path(tempfile.mkdtemp(prefix="dpdeploy-bench-"))
    s = resolve_settings({"home": str(home), "prefix": args.env, "profile": "cu130", "arch_list": args.targeted}, env={})
    facts = probe.probe(disk_path=str(home), nvml=probe.load_nvml())
    targeted = resolve(facts, matrix, s)
    full = replace(targeted, torch_cuda_arch_list=matrix.profile("cu130").arch_list)
    if args.source:
        src = acquire(args.source, matrix.d2_repo, matrix.d2_commit, home / "src", allow_unpinned=True)
        tree, parts, ident = Path(src.path), build.projects(matrix.densepose_subdir), src.identity
    else:
        tree, parts, ident = paths.TESTEXT_SOURCE, (builder.Project("dpdeploy-testext", ""),), "testext"
    info = torch_info(args.env)
    python = str(Path(args.env) / "bin" / "python")
    log = home / "bench.log"

    def cold(plan):
        fields = wheelcache.key_fields(ident, info, plan, facts.machine)
        key = wheelcache.cache_key(fields)
        return key, wheelcache.store(home / "wheels", key, fields,
                                     lambda out: builder.compile_wheels(plan, tree, parts, out, log, lambda line: None))

    def hit(key):
        wheels = wheelcache.lookup(home / "wheels", key)
        assert wheels is not None, "cache miss where a hit was expected"
        builder.install_wheels(wheels, python, log)

    print(f"building {tree.name} in {home} (log {log})", flush=True)
    t_cold, (key, _) = timed(lambda: cold(targeted))
    print(f"  cold build, {targeted.torch_cuda_arch_list}: {t_cold:.1f}s", flush=True)
    t_hit, _ = timed(lambda: hit(key))
    print(f"  cache hit (lookup + install): {t_hit:.1f}s", flush=True)
    t_full, _ = timed(lambda: cold(full))
    print(f"  cold build, {full.torch_cuda_arch_list}: {t_full:.1f}s", flush=True)
    print(f"ratios: cold/hit = {t_cold / t_hit:.1f}x, full list/targeted = {t_full / t_cold:.2f}x")


if __name__ == "__main__":
    main()
