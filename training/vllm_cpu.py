"""vLLM's CPU backend made fit for TRL's colocated rollouts (CPU machines only: tests, demo, CI).

Two things differ from a GPU run; both are set up here, before GRPOTrainer starts its engine:

1. vLLM's CPU backend repacks every linear weight after loading (oneDNN or sgl kernels) and
   replaces the Parameter with an empty one (``dispatch_cpu_unquantized_gemm(...,
   remove_weight=True)``). TRL's in-place weight sync then fails with "'Parameter' object has no
   attribute 'weight_loader'"; the tied lm_head keeps its Parameter but computes from the packed
   copy, so a sync would silently not reach it. We keep every CPU linear layer on plain
   ``F.linear`` over its live Parameter. GPUs never repack, so nothing changes there.
2. vLLM downcasts a float32 checkpoint to bfloat16 on CPU, so rollouts would come from another
   model than the float32 one being trained. The engine starts in the trainer's dtype.

Every CPU engine here (colocated rollouts, ``make check-vllm``, ``--backend vllm`` evaluation) runs
eager (``CPU_ENGINE_KWARGS``): compiling costs about 19 s per engine start on 2 cores (2 s eager),
and decodes the tiny model only about 25% faster (64 prompts x 64 tokens: 0.33 s vs 0.42 s), so
eager wins for any run of the demo's size. GPUs keep vLLM's defaults (CUDA graphs).
"""

from __future__ import annotations

import functools

_PATCHED = "_openmedix_keeps_weights"
CPU_ENGINE_KWARGS = {"enforce_eager": True}


def on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def keep_linear_weights_unpacked() -> None:
    """Make vLLM's CPU linear layers read their Parameters (idempotent; affects this process only)."""
    import torch
    import vllm.model_executor.layers.utils as layer_utils

    original = layer_utils.dispatch_cpu_unquantized_gemm
    if getattr(original, _PATCHED, False):
        return

    @functools.wraps(original)
    def dispatch(layer, remove_weight: bool) -> None:
        if layer.weight.is_meta or layer.weight.ndim != 2:
            return original(layer, remove_weight)  # conv / MoE weights: never synced by TRL here
        layer.cpu_linear = torch.nn.functional.linear

    setattr(dispatch, _PATCHED, True)
    layer_utils.dispatch_cpu_unquantized_gemm = dispatch


def prepare_colocate(dtype: str | None) -> bool:
    """Set vLLM up for colocated rollouts when it runs on CPU; False (nothing done) on GPUs."""
    if not on_cpu():
        return False
    keep_linear_weights_unpacked()
    from trl.generation import vllm_generation

    llm = vllm_generation.LLM
    if not isinstance(llm, functools.partial):
        kwargs = {**CPU_ENGINE_KWARGS, **({"dtype": dtype} if dtype and dtype != "auto" else {})}
        vllm_generation.LLM = functools.partial(llm, **kwargs)
    return True


def cpu_engine_kwargs() -> dict:
    """Engine arguments for an ``LLM`` started on this machine: eager on CPU (see above), vLLM's defaults on
    GPUs."""
    return dict(CPU_ENGINE_KWARGS) if on_cpu() else {}
