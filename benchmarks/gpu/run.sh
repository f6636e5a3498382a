#!/usr/bin/env bash
# The GPU check of issue 17 in one command, for a fresh single-GPU machine that has the NVIDIA
# driver, Python, torch and transformers but no Ray, no DeepSpeed and no network:
#
#   benchmarks/gpu/pack.sh                       # here, once: .gpukit/ (Ray, DeepSpeed, the data)
#   # device run, carry [".gpukit"]:
#   benchmarks/gpu/run.sh                        # writes results.json / results.md under $OUT
#   benchmarks/gpu/run.sh --tiny                 # CPU, tiny models: what make test runs
#
# Parts (benchmarks/gpu/check.py), each with its own time limit, results rewritten after each row:
# (a) the training step, plain PyTorch against our DeepSpeed strategy lever by lever, for a 1.5B
# and a 0.5B Qwen2-style random-init encoder (at most 250 s; the variants that matter most first);
# (b) interest pretrain through Ray Train with a trainable 0.5B decoder item encoder, full and
# LoRA, 40 steps each (at most 200 s).
set -uo pipefail
cd "$(dirname "$0")/../.."
TINY=""
[ "${1:-}" = "--tiny" ] && TINY="--tiny"
OUT=${OUT:-outputs/gpu-check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
if [ -f .gpukit/unpack.sh ]; then
    # shellcheck disable=SC1091
    source .gpukit/unpack.sh    # Ray and DeepSpeed under /tmp/site, on PYTHONPATH
fi
# The project itself is pure Python: on the path as it is, nothing to install.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false RAY_DEDUP_LOGS=0
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/torch_extensions}
[ -n "$TINY" ] && export DS_ACCELERATOR=cpu
PREPARED=${PREPARED:-}
if [ -z "$TINY" ] && [ -z "$PREPARED" ] && [ -f .gpukit/prepared/manifest.json ]; then
    PREPARED=.gpukit/prepared
fi
exec "$PY" -m benchmarks.gpu.check --out "$OUT" ${PREPARED:+--prepared "$PREPARED"} $TINY
