#!/usr/bin/env bash
# Serve a Qwen2.5-VL policy with vLLM for GRPO's server mode (`vllm_mode: server`). Used by
# `make vllm-serve` and by recipes/slurm/grpo_multinode.sbatch.
#
#   CUDA_VISIBLE_DEVICES=0 recipes/vllm_serve.sh                        # MODEL from the environment
#   CUDA_VISIBLE_DEVICES=0 recipes/vllm_serve.sh outputs/qwen2.5-vl-7b/coldstart
#   CUDA_VISIBLE_DEVICES=0,1 VLLM_TP=2 recipes/vllm_serve.sh MODEL --enforce-eager   # extra flags go to vLLM
#   DRY_RUN=1 recipes/vllm_serve.sh MODEL                                 # print the command only
#
# Then train on the other GPUs with recipes/qwen2.5-vl-7b/grpo-server.yaml. The server must start
# from the same weights as the trainer (the trainer pushes its weights over NCCL before each round).
#
# What `trl vllm-serve` (trl 1.16) does: it is a thin wrapper that execs `vllm serve` with the
# settings TRL's client needs (NCCL weight-transfer engine, processed logprobs, no logprob cap,
# the scale-out endpoints used for multimodal prompts, VLLM_SERVER_DEV_MODE=1). Its own flags are
# model, tensor/data parallel size, host, port, gpu_memory_utilization, dtype, max_model_len,
# prefix caching, enforce_eager, kv_cache_dtype, ...; anything it does not know is passed to
# `vllm serve` unchanged. That is how the Qwen2.5-VL settings below get there:
#   --limit-mm-per-prompt  one image and no video per prompt; the image entry also sets the size
#                          vLLM profiles with (512 x 512), so it reserves encoder memory for one
#                          324-token image instead of the worst case of the model's default
#                          max_pixels (~16K tokens per image)
#   --mm-processor-kwargs  the same min/max pixels as the recipes and the data's frame.json, so
#                          the server's image processor sees our images exactly as the trainer does
# Data parallelism: vLLM >= 0.14 refuses --data-parallel-size > 1 for dense models like this one
# (trl PR 5214, vLLM PR 30739), so one server uses VLLM_TP GPUs (TP must divide the 28 attention
# heads and 4 KV heads of Qwen2.5-VL-7B: 1, 2 or 4).

set -euo pipefail

MODEL="${1:-${MODEL:-outputs/qwen2.5-vl-7b/coldstart}}"
[[ $# -gt 0 ]] && shift
VLLM_TP="${VLLM_TP:-1}"
VLLM_DP="${VLLM_DP:-1}"
VLLM_HOST="${VLLM_HOST:-0.0.0.0}"
VLLM_PORT="${VLLM_PORT:-8000}"
VLLM_GPU_MEMORY_UTILIZATION="${VLLM_GPU_MEMORY_UTILIZATION:-0.9}"   # the GPU is vLLM's alone
VLLM_MAX_MODEL_LEN="${VLLM_MAX_MODEL_LEN:-4096}"                   # 2048 prompt + 2048 completion
MIN_PIXELS="${MIN_PIXELS:-3136}"
MAX_PIXELS="${MAX_PIXELS:-262144}"
IMAGE_SIDE="${IMAGE_SIDE:-512}"                                     # sqrt(MAX_PIXELS), for profiling
TRL="${TRL:-trl}"

cmd=(
    "$TRL" vllm-serve
    --model "$MODEL"
    --tensor_parallel_size "$VLLM_TP"
    --data_parallel_size "$VLLM_DP"
    --host "$VLLM_HOST"
    --port "$VLLM_PORT"
    --gpu_memory_utilization "$VLLM_GPU_MEMORY_UTILIZATION"
    --max_model_len "$VLLM_MAX_MODEL_LEN"
    --dtype bfloat16
    --limit-mm-per-prompt "{\"image\": {\"count\": 1, \"width\": $IMAGE_SIDE, \"height\": $IMAGE_SIDE}, \"video\": 0}"
    --mm-processor-kwargs "{\"min_pixels\": $MIN_PIXELS, \"max_pixels\": $MAX_PIXELS}"
    "$@"
)

if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%q ' "${cmd[@]}"
    echo
    exit 0
fi
if [[ ! -e "$MODEL" && ( "$MODEL" == /* || "$MODEL" == .* || "$MODEL" == outputs/* ) ]]; then
    echo "vllm_serve.sh: model folder '$MODEL' not found (train the previous stage first, or pass MODEL)" >&2
    exit 2
fi
echo "serving $MODEL on ${VLLM_HOST}:${VLLM_PORT} (GPUs: ${CUDA_VISIBLE_DEVICES:-all}, TP $VLLM_TP)" >&2
exec "${cmd[@]}"
