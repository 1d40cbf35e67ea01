"""CheXbert labels of report text, for the reward server: one model load, batched forward passes.

CheXbert (Smit et al., 2020) is bert-base-uncased with 14 linear heads on the [CLS] vector: 13
observations with 4 classes (0 blank, 1 positive, 2 negative, 3 uncertain) and No Finding with 2
(0 blank, 1 positive). This is the same model, checkpoint and decoding that radeval's F1CheXbert uses
for `make eval`'s CheXbert F1 (tests/test_chexbert_reward.py checks the labels agree), written here
against transformers alone so the reward server runs in the training environment.

Weights, never downloaded here: ``chexbert.pth`` from the hub repo StanfordAIMI/RRG_scorers, looked
up in radeval's cache ($XDG_CACHE_HOME/chexbert, where `make fetch-metric-weights` puts it) and then
in the Hugging Face cache ($HF_HOME), or at ``OPENMEDIX_CHEXBERT``; bert-base-uncased's config and
vocabulary from the Hugging Face cache.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rewards.report_labels import NEGATIVE, POSITIVE, UNCERTAIN

log = logging.getLogger(__name__)

REPO, FILENAME, BACKBONE = "StanfordAIMI/RRG_scorers", "chexbert.pth", "bert-base-uncased"
# Head order of the checkpoint (radeval's F1CheXbert.TARGET_NAMES)
HEADS = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "No Finding",
)
CLASSES = {0: None, 1: POSITIVE, 2: NEGATIVE, 3: UNCERTAIN}  # No Finding's head uses 0 and 1 only
FETCH = "make install-metrics && make fetch-metric-weights (once, with network), or set OPENMEDIX_CHEXBERT"


class MissingWeights(FileNotFoundError):
    """A model's weights are not on this machine; the message names the command that fetches them."""


def checkpoint_path() -> Path:
    """chexbert.pth: OPENMEDIX_CHEXBERT, radeval's cache, or the Hugging Face cache."""
    if explicit := os.environ.get("OPENMEDIX_CHEXBERT"):
        if not Path(explicit).is_file():
            raise MissingWeights(f"OPENMEDIX_CHEXBERT={explicit} is not a file")
        return Path(explicit)
    from huggingface_hub import try_to_load_from_cache

    radeval_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "chexbert"
    for cache_dir in (radeval_cache, None):
        found = try_to_load_from_cache(REPO, FILENAME, cache_dir=cache_dir)
        if isinstance(found, str):
            return Path(found)
    raise MissingWeights(
        f"CheXbert's {FILENAME} ({REPO}) is not in {radeval_cache} nor in the Hugging Face cache: {FETCH}"
    )


class CheXbertLabeler:
    """CheXbert loaded once; ``label(texts)`` gives each report's 14 labels as report_labels does
    (1 positive, 0 negative, -1 uncertain, None not mentioned)."""

    def __init__(self, device: str | None = None, batch_size: int = 64):
        import torch
        from transformers import BertConfig, BertModel, BertTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        ckpt = checkpoint_path()
        try:
            config = BertConfig.from_pretrained(BACKBONE, local_files_only=True)
            self.tokenizer = BertTokenizer.from_pretrained(BACKBONE, local_files_only=True)
        except OSError as e:
            raise MissingWeights(
                f"{BACKBONE} (CheXbert's backbone) is not in the Hugging Face cache: {FETCH}"
            ) from e
        self.bert = BertModel(config)
        hidden = config.hidden_size
        self.heads = torch.nn.ModuleList(
            [torch.nn.Linear(hidden, 4) for _ in HEADS[:-1]] + [torch.nn.Linear(hidden, 2)]
        )
        state = torch.load(ckpt, map_location="cpu")["model_state_dict"]
        state = {k.removeprefix("module."): v for k, v in state.items()}
        module = torch.nn.Module()
        module.bert, module.linear_heads = self.bert, self.heads
        module.load_state_dict(state, strict=True)
        module.to(self.device).eval()
        log.info("CheXbert loaded from %s on %s", ckpt, self.device)

    def label(self, texts: list[str]) -> list[dict[str, int | None]]:
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(
                    list(texts[i : i + self.batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=512,
                    return_tensors="pt",
                ).to(self.device)
                cls = self.bert(input_ids=enc.input_ids, attention_mask=enc.attention_mask).last_hidden_state[
                    :, 0
                ]
                classes = torch.stack([head(cls).argmax(dim=1) for head in self.heads], dim=1)
                out += [{name: CLASSES[c] for name, c in zip(HEADS, row)} for row in classes.tolist()]
        return out
