"""``freeze_vision_tower``: RL leaves the vision encoder and its merger alone.

EasyR1 (``freeze_vision_tower``) and ms-swift (``freeze_vit``) offer the same: the reward is about
what the model says, and the vision features the SFT and cold-start stages learned are kept. The
frozen parameters get ``requires_grad = False`` before the trainer builds its optimizer, so they
have no gradients and no optimizer state (AdamW's two fp32 moments, plus DeepSpeed's fp32 master
copy: 12 bytes per parameter, before sharding); the model is still saved whole. Qwen2.5-VL and
Qwen3-VL keep both under ``visual`` (``model.visual.*``; Qwen3-VL's deepstack mergers too).
"""

from __future__ import annotations

import logging

from data_prep.errors import OpenMedixError

log = logging.getLogger(__name__)


class NoVisionTowerError(OpenMedixError, ValueError):
    """freeze_vision_tower on a model without a ``visual`` module."""


def is_vision_parameter(name: str) -> bool:
    return name.startswith("visual.") or ".visual." in name


def freeze_vision_tower(model) -> int:
    """Freeze every vision-encoder and merger parameter (LoRA adapters on them too); returns how many."""
    frozen = 0
    for name, param in model.named_parameters():
        if is_vision_parameter(name):
            param.requires_grad_(False)
            frozen += param.numel() if param.numel() else getattr(param, "ds_numel", 0)  # ZeRO-3 placeholders
    if not frozen:
        raise NoVisionTowerError(
            f"freeze_vision_tower: {type(model).__name__} has no `visual` parameters to freeze; "
            "remove the key from the recipe"
        )
    trainable = sum(p.numel() or getattr(p, "ds_numel", 0) for p in model.parameters() if p.requires_grad)
    log.info("vision tower frozen: %.1fM parameters; %.1fM still trained", frozen / 1e6, trainable / 1e6)
    return frozen
