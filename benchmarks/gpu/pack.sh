#!/usr/bin/env bash
# Packs what benchmarks/gpu/run.sh needs on a GPU machine without network into .gpukit/ (ignored
# by git, under the 64 MiB a device call carries): Ray and DeepSpeed from GPUKIT (default
# ../shared/gpukit, see its README) and the demo's prepared data (ML-1M and ML-100K, a few MiB).
set -euo pipefail
cd "$(dirname "$0")/../.."
GPUKIT=${GPUKIT:-../shared/gpukit}
PY=${PYTHON:-.venv/bin/python}
test -f "$GPUKIT/unpack.sh" || { echo "no GPU kit at $GPUKIT (set GPUKIT)"; exit 2; }
rm -rf .gpukit && mkdir -p .gpukit
cp -r "$GPUKIT"/. .gpukit/
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$PY" -m ray_jobs.cli data fetch movielens --data-dir data/raw --quiet
"$PY" - <<'PYEOF'
from interest_model.data.config import PrepareConfig
from interest_model.data.engine import PandasEngine
from interest_model.data.pipeline import run_prepare

run_prepare(PrepareConfig.load("ray_jobs/configs/demo.yaml", ["input.root=data/raw", "output_dir=.gpukit/prepared"]),
            PandasEngine())
PYEOF
rm -rf .gpukit/prepared/rejects
du -sh .gpukit
