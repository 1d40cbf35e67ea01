"""Vision special tokens are never sampled: not in GRPO rollouts, not in evaluation.

A completion that holds ``<|image_pad|>`` gives the training forward one more image token than
there are image features ("Image features and image tokens do not match"), which ends a
multi-GPU run; ``<|vision_start|>`` or ``<|video_pad|>`` confuse Qwen2.5-VL's position ids the
same way. TRL 1.16 suppresses only ``<|image_pad|>`` and only without vLLM. We ban all of them,
by id in ``model.generate`` (``suppress_tokens``) and by word in vLLM (``bad_words``, which sets
their logits to -inf; a logit bias is capped at -100 and can lose to a model that wants them).
"""

from __future__ import annotations

VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")


def tokenizer_of(processing_class):
    return getattr(processing_class, "tokenizer", processing_class)


def vision_tokens(processing_class) -> list[str]:
    """The vision special tokens this tokenizer has (as strings)."""
    tok = tokenizer_of(processing_class)
    vocab = tok.get_vocab()
    return [t for t in VISION_TOKENS if t in vocab]


def vision_token_ids(processing_class) -> list[int]:
    tok = tokenizer_of(processing_class)
    return [tok.convert_tokens_to_ids(t) for t in vision_tokens(processing_class)]


def ban_in_trainer(trainer) -> list[str]:
    """Ban the vision tokens in a GRPOTrainer's rollouts (vLLM or transformers); returns them."""
    words = vision_tokens(trainer.processing_class)
    if not words:
        return []
    if getattr(trainer, "use_vllm", False):
        kwargs = trainer.vllm_generation.generation_kwargs
        kwargs["bad_words"] = sorted(set(kwargs.get("bad_words") or []) | set(words))
    else:
        ids = vision_token_ids(trainer.processing_class)
        suppress = sorted(set(trainer.generation_config.suppress_tokens or []) | set(ids))
        trainer.generation_config.suppress_tokens = suppress
        trainer.generation_kwargs["suppress_tokens"] = suppress
    return words
