"""Build the demo's tiny Qwen2.5-VL offline: config, tokenizer, processor, chat template.

    python -m recipes.tiny_model --out outputs/tiny-qwen2.5-vl [--size 224]

Same architecture as Qwen/Qwen2.5-VL-7B-Instruct (vision tower with window attention and
patch merger, M-RoPE language model), shrunk to ~1M parameters so the whole pipeline runs
on two CPU cores in minutes. Nothing comes from a hub: the byte-level BPE tokenizer is trained
here on a small built-in radiology corpus, with Qwen2.5-VL's special tokens and its chat
template, and the processor is a real ``Qwen2_5_VLProcessor`` (left padding, for generation).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

from data_prep.frame import QWEN_MIN_PIXELS
from data_prep.prompts import REASONING_INSTRUCTION

# Qwen2.5-VL's added tokens, in Qwen's order (ids differ: our vocabulary is tiny).
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]

# The chat template shipped with Qwen/Qwen2.5-VL-7B-Instruct (chat_template.json), verbatim.
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2's pre-tokenizer split: digits one at a time, which suits box coordinates.
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CORPUS = [
    REASONING_INSTRUCTION,
    "You are a helpful assistant.",
    "<think> The heart [80, 96, 150, 170] is enlarged. </think>. The answer is: \\boxed{yes}",
    "Describe the findings of this chest X-ray. Write the impression of this chest radiograph.",
    "Is there a pleural effusion? Is there cardiomegaly? Is there a pneumothorax? Is there a nodule?",
    "Is there consolidation? Where is the nodule? Where is the consolidation? What abnormalities are seen?",
    "Which of the following labels apply: cardiomegaly, pleural effusion, pneumothorax, consolidation, "
    "nodule, no finding? Locate the right pleural effusion. Locate the left pneumothorax.",
    "yes no right left upper middle lower lung zone apex base costophrenic angle blunting",
    "The heart is normal in size. The heart is enlarged. The cardiac silhouette is enlarged. "
    "The lungs are clear. No pleural effusion or pneumothorax. No focal consolidation.",
    "There is a small right pleural effusion. There is a moderate left pleural effusion. "
    "There is a right apical pneumothorax with a visible pleural line. Patchy consolidation in the "
    "left lower lung. A rounded nodule in the right upper lung. Mediastinal contours are normal.",
    "Impression: cardiomegaly. No acute cardiopulmonary process. Findings: normal chest radiograph.",
    "atelectasis edema fracture lesion opacity support devices enlarged cardiomediastinum pneumonia",
    "0 1 2 3 4 5 6 7 8 9 [ ] , . : ; | ( ) { } < > / \\boxed{ } <think> </think>",
]


def phantom_corpus(n_studies: int = 150) -> list[str]:
    """Questions, answers and grounded reasoning of a few phantom studies: the demo's vocabulary,
    so that prompts and reports tokenise into few tokens (short sequences = fast CPU steps)."""
    from data_prep.phantom import plan_studies, render, study_records
    from data_prep.prompts import question_text
    from data_prep.synthesis.offline_teacher import STYLES, offline_completion

    texts = []
    for study in plan_studies(n_studies, seed=12345):
        _, study.boxes, study.anatomy = render(study.patient, study.findings, 224, study.noise_seed)
        for rec in study_records(study, size=224, seed=12345):
            texts += [question_text(rec, reasoning=False), rec["answer"]]
            texts += [offline_completion(rec, style) for style in STYLES]
    return texts


def train_tokenizer(vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The fixed instruction and chat scaffolding appear in every sample: weight them up.
    tok.train_from_iterator(CORPUS * 50 + phantom_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=4096,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def build_processor(tokenizer, min_pixels: int, max_pixels: int) -> Qwen2_5_VLProcessor:
    image_processor = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )


def tiny_config(tokenizer, hidden: int = 128, layers: int = 2, vision_hidden: int = 64) -> Qwen2_5_VLConfig:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    heads = 4
    head_dim = hidden // heads
    half = head_dim // 2  # mrope splits the rotary half-dim into temporal / height / width
    mrope = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": hidden * 3,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
            "bos_token_id": None,
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": 2,
            "hidden_size": vision_hidden,
            "intermediate_size": vision_hidden * 2,
            "num_heads": 4,
            "out_hidden_size": hidden,
            "fullatt_block_indexes": [1],
            "window_size": 112,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def build_tiny_model(
    out_dir: str | Path,
    size: int = 224,
    min_pixels: int = QWEN_MIN_PIXELS,
    hidden: int = 128,
    layers: int = 2,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Build (or reuse) the tiny model folder; max_pixels = size * size matches the phantom frame."""
    out = Path(out_dir)
    marker = out / "tiny_model.json"
    wanted = {"size": size, "min_pixels": min_pixels, "hidden": hidden, "layers": layers, "seed": seed}
    if not force and marker.exists() and json.loads(marker.read_text()) == wanted:
        return out
    torch.manual_seed(seed)
    tokenizer = train_tokenizer()
    processor = build_processor(tokenizer, min_pixels=min_pixels, max_pixels=size * size)
    config = tiny_config(tokenizer, hidden=hidden, layers=layers)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = [config.text_config.eos_token_id]
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.do_sample = False
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    marker.write_text(json.dumps(wanted) + "\n")  # written last: a half-built folder is rebuilt
    n = sum(p.numel() for p in model.parameters())
    print(f"tiny Qwen2.5-VL: {n / 1e6:.2f}M parameters, vocab {len(tokenizer)} -> {out}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/tiny-qwen2.5-vl")
    ap.add_argument("--size", type=int, default=224, help="phantom frame side (max_pixels = size^2)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--force", action="store_true", help="rebuild even if the folder is up to date")
    args = ap.parse_args()
    path = build_tiny_model(
        args.out, size=args.size, hidden=args.hidden, layers=args.layers, force=args.force
    )
    print(f"tiny model ready: {path}")


if __name__ == "__main__":
    main()
