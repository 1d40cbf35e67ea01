"""Tiny models with opinions, for comparing generation paths token by token (tests only).

The freshly built tiny model is near-uniform and greedy-decodes the same token for every prompt,
so two generation paths would agree even if one of them lost the image. ``reinit`` gives it
seeded weights (std 0.1, norms kept) whose greedy tokens depend on prompt and image, with top-2
logit margins far above float32 kernel differences. ``make_vision_loving`` builds a model whose
every greedy step wants a vision special token.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch


def reinit(model, seed: int, std: float = 0.1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def make_vision_loving(model, vision_ids: list[int], seed: int = 0) -> None:
    """No mixing across positions (attention and MLP outputs zeroed), every text embedding leans on
    one direction u, vision tokens' embeddings are 10 u: with tied embeddings each step's logits
    are h . E, largest for the vision tokens whatever the input."""
    gen = torch.Generator().manual_seed(seed)
    lm = model.model.language_model
    with torch.no_grad():
        for layer in lm.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = lm.embed_tokens.weight
        u = torch.zeros(emb.shape[1])
        u[0] = 1.0
        emb.copy_(u + 0.1 * torch.randn(emb.shape, generator=gen))
        emb[vision_ids] = 10 * u


def save_variant(src: str | Path, dst: str | Path, edit) -> Path:
    """Copy a model folder (processor included) and save ``edit(model)``'s weights into the copy."""
    from transformers import AutoModelForImageTextToText

    dst = Path(dst)
    shutil.copytree(src, dst, dirs_exist_ok=True)
    model = AutoModelForImageTextToText.from_pretrained(src, dtype=torch.float32)
    edit(model)
    model.save_pretrained(dst)
    return dst
