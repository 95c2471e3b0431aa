#!/usr/bin/env bash
# The GPU-host scenario of issue 19: an image that has torch and nvcc but no network. Deploys from an
# offline bundle with the host profile (the image's torch, not a second one), builds detectron2 for
# the GPUs present, runs the smoke tests with REQUIRE_GPU=1 and the predict benchmark on the GPU, and
# prints the figures for the closing note (build time, compiled archs, smoke result, images/s).
# Sized for well under 10 minutes on one GPU (the build dominates: one arch, MAX_JOBS from the host).
#
#   on a connected host:  .venv/bin/invoke bundle --profile host --out host.tar --source detectron2-<pin>.tar.gz
#   on the GPU host:      benchmarks/gpu_host_offline.sh host.tar [/usr/bin/python3]
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${1:?usage: $0 BUNDLE [HOST_PYTHON]}
HOST_PYTHON=${2:-$(command -v python3)}
export DPDEPLOY_HOME=${DPDEPLOY_HOME:-$PWD/.state-gpu-offline}
export DPDEPLOY_PROFILE=host DPDEPLOY_PYTHON=$HOST_PYTHON NO_COLOR=1
INV=.venv/bin/invoke
[ -x "$INV" ] || { echo "gpu_host_offline: no tools venv (.venv); carry it or run python3 bootstrap.py first" >&2; exit 2; }

echo "== host"
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader
"$HOST_PYTHON" -c 'import torch; print("host torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_arch_list())'
command -v nvcc >/dev/null && nvcc --version | tail -1 || echo "no nvcc on PATH (the plan says what it needs)"

echo "== setup --offline (env, build, weights, smoke)"
start=$SECONDS
REQUIRE_GPU=1 "$INV" setup --offline --bundle "$BUNDLE" --force-smoke
setup_s=$((SECONDS - start))
run=$(ls -1d "$DPDEPLOY_HOME"/runs/*-setup | tail -1)

echo "== smoke again with REQUIRE_GPU=1 (gpu tests fail rather than skip)"
REQUIRE_GPU=1 "$INV" smoke --json > "$DPDEPLOY_HOME/smoke.json"

echo "== predict benchmark on the GPU"
source_archive=$(ls -1 "$DPDEPLOY_HOME"/bundles/*/source/* | head -1)
DPDEPLOY_TEST_D2_SOURCE=$source_archive .venv/bin/python benchmarks/predict_bench.py \
  --prefix "$DPDEPLOY_HOME/envs/host" --copies 4 --device cuda --modes fp32:1,fp32:0,fp16:1,fp16:0 | tee "$DPDEPLOY_HOME/predict_bench.txt"

echo "== figures"
.venv/bin/python - "$run" "$DPDEPLOY_HOME" "$setup_s" <<'PY'
import json, sys
from pathlib import Path
run, home, setup_s = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
steps = {s["name"]: s for s in json.loads((run / "steps.json").read_text())}
build = json.loads((home / "envs" / "host" / ".dpdeploy-build.json").read_text())
smoke = json.loads((home / "smoke.json").read_text())
print(f"setup (offline, all steps): {setup_s} s; build step {steps['build']['duration_s']} s")
print(f"arch list {build.get('arch_list')}; compiled {build.get('compiled_archs')}")
print(f"smoke: {steps['smoke']['status']} in setup; again with REQUIRE_GPU=1: {smoke.get('ok', smoke)}")
PY
grep -iE "images/s|img/s" "$DPDEPLOY_HOME/predict_bench.txt" || true
