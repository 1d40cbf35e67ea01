"""Guard against trl 1.16 + vLLM expanding Qwen2.5-VL image tokens twice (trl issues 6294, 6401).

TRL tokenises the prompt with the processor, which already repeats ``<|image_pad|>`` once per
merged image patch, then hands those ids plus the image to vLLM. If vLLM expands the
placeholders again, the rollout is conditioned on a corrupted prompt: training silently
degrades or vLLM fails on a feature/token mismatch. We compare, per prompt, the number of image
tokens TRL sent with the number vLLM reports it processed, and stop at the first mismatch
with a message that says what to do. (A fix is proposed upstream in trl PR 6718.)
"""

from __future__ import annotations

import functools

ADVICE = (
    "vLLM expanded the image tokens of a Qwen2.5-VL prompt a second time (trl issues 6294/6401): "
    "rollouts would be generated from a corrupted prompt. Fixes: run vLLM in server mode "
    "(`vllm_mode: server`, `make vllm-serve`), which passes image features at the prompt's own "
    "image-token positions; or upgrade trl to a release that contains PR 6718; or train without "
    "vLLM (`use_vllm: false`). Set `vllm_guard: false` only to reproduce the bug."
)


class DoubleImageExpansionError(RuntimeError):
    pass


def count_runs(ids, token_id: int) -> list[int]:
    """Lengths of the runs of ``token_id`` in ``ids`` (one run per image)."""
    runs, n = [], 0
    for t in ids:
        if t == token_id:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    if n:
        runs.append(n)
    return runs


def check_expansion(sent_prompt_ids, returned_prompt_ids, image_token_id: int) -> None:
    """Raise when vLLM's prompt holds more image tokens than the prompt TRL sent (per prompt)."""
    if len(returned_prompt_ids) % max(len(sent_prompt_ids), 1):
        return  # cannot align (shouldn't happen): nothing to compare
    repeat = len(returned_prompt_ids) // max(len(sent_prompt_ids), 1)
    for i, returned in enumerate(returned_prompt_ids):
        sent = sent_prompt_ids[i // repeat] if repeat else sent_prompt_ids[i]
        want, got = count_runs(sent, image_token_id), count_runs(returned, image_token_id)
        if sum(got) > sum(want):
            raise DoubleImageExpansionError(
                f"prompt {i}: TRL sent {sum(want)} image tokens in runs {want}, vLLM processed "
                f"{sum(got)} in runs {got}. {ADVICE}"
            )


def install(trainer) -> bool:
    """Wrap ``trainer.vllm_generation.generate`` with the check; False when vLLM is not in use."""
    generation = getattr(trainer, "vllm_generation", None)
    if not getattr(trainer, "use_vllm", False) or generation is None:
        return False
    image_token_id = trainer.processing_class.image_token_id
    original = generation.generate

    @functools.wraps(original)
    def checked_generate(prompts, *args, **kwargs):
        out = original(prompts, *args, **kwargs)
        returned_prompt_ids = out[0]
        if returned_prompt_ids is not None:
            check_expansion(prompts, returned_prompt_ids, image_token_id)
        return out

    generation.generate = checked_generate
    return True
