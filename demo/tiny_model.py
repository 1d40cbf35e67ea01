"""Build the demo's tiny Qwen-VL offline: config, tokenizer, processor, chat template.

    python -m demo.tiny_model --out outputs/tiny-qwen2.5-vl [--size 224]
    python -m demo.tiny_model --family qwen3-vl --size 128 --out outputs/tiny-qwen3-vl

Two families, each the architecture of its full-size model shrunk to ~1M parameters, so the whole
pipeline runs on two CPU cores in minutes:

- ``qwen2.5-vl`` (default), as Qwen/Qwen2.5-VL-7B-Instruct: vision tower with window attention and
  patch merger, M-RoPE language model; 14 px patches merged 2 x 2, image sides in multiples of 28.
- ``qwen3-vl``, as Qwen/Qwen3-VL-8B-Instruct: vision tower with a learned position grid and
  DeepStack mergers feeding the first language layers, interleaved M-RoPE language model with
  QK-norm; 16 px patches merged 2 x 2, image sides in multiples of 32.

Nothing comes from a hub: the byte-level BPE tokenizer is trained here on a small built-in
radiology corpus, with the family's added tokens and chat template, and the processor is the
family's real one (``Qwen2_5_VLProcessor`` / ``Qwen3VLProcessor``, left padding, for generation).
max_pixels = size * size, so a size x size phantom image is kept as it is: size must be a multiple
of the family's 28 or 32.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

from data_prep.errors import setup_logging
from data_prep.frame import QWEN3_MIN_PIXELS, QWEN_MIN_PIXELS
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

log = logging.getLogger(__name__)


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


def train_tokenizer(
    vocab_size: int = 2000, added_tokens: list[str] = SPECIAL_TOKENS, not_special: tuple[str, ...] = ()
) -> PreTrainedTokenizerFast:
    """Byte-level BPE on the corpus above. ``added_tokens`` (the family's, in Qwen's order, the pad
    token first) get the first ids and are never split; those in ``not_special`` are plain added
    tokens, as Qwen3 has them: decoding with ``skip_special_tokens`` keeps them."""
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
        special_tokens=added_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The fixed instruction and chat scaffolding appear in every sample: weight them up.
    tok.train_from_iterator(CORPUS * 50 + phantom_corpus(), trainer=trainer)
    if not_special:  # the trainer flags all its tokens special; re-adding keeps the ids, drops the flag
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in not_special])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        additional_special_tokens=[t for t in added_tokens[1:] if t not in not_special],
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


# --- Qwen3-VL -------------------------------------------------------------------------------------

# Qwen3-VL's added tokens, in Qwen's order: Qwen2.5-VL's and four more. Its tokenizer_config flags
# only the first 14 (to <|video_pad|>) special; from <tool_call> on they are plain added tokens, so
# "<think> ... </think>" survives decoding with skip_special_tokens into the text the rewards read.
QWEN3_VL_ADDED_TOKENS = SPECIAL_TOKENS + ["<tool_response>", "</tool_response>", "<think>", "</think>"]
QWEN3_VL_NOT_SPECIAL = tuple(QWEN3_VL_ADDED_TOKENS[QWEN3_VL_ADDED_TOKENS.index("<tool_call>") :])

# The chat template shipped with Qwen/Qwen3-VL-8B-Instruct, verbatim (5292 bytes, SHA-256
# 3636d0f0bd6bef02654cdffdc447b79cb2cef8ab02cc75267345946291a489e4, as pinned for the template of
# Qwen/Qwen3-VL-8B-Instruct-GGUF by a public test). Unlike Qwen2.5-VL's it adds no default system turn.
QWEN3_VL_CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' }}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
{%- for message in messages %}
    {%- if message.role == "user" %}
        {{- '<|im_start|>' + message.role + '\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content_item in message.content %}
                {%- if 'text' in content_item %}
                    {{- content_item.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and message.content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""


def build_qwen3_vl_processor(tokenizer, min_pixels: int, max_pixels: int) -> Qwen3VLProcessor:
    # Qwen3-VL-8B-Instruct's preprocessor configs: 16 px patches merged 2 x 2, two frames per
    # temporal patch, mean and std 0.5; the image min/max pixels are the phantom frame's here.
    image_processor = Qwen2VLImageProcessor(
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    video_processor = Qwen3VLVideoProcessor(size={"shortest_edge": 4096, "longest_edge": 25165824})
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
    )


def tiny_qwen3_vl_config(
    tokenizer, hidden: int = 128, layers: int = 2, vision_hidden: int = 64, vision_depth: int = 3
) -> Qwen3VLConfig:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN3_VL_ADDED_TOKENS}
    heads = 4
    head_dim = hidden // heads
    half = head_dim // 2
    # Qwen3-VL-8B splits its 64 rotary half-dims [24, 20, 20] into temporal / height / width,
    # interleaved (t h w t h w ...); ours keeps the same shares.
    hw = half * 20 // 64
    mrope = [half - 2 * hw, hw, hw]
    return Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": hidden * 3,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": 2,
            "head_dim": head_dim,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": mrope,
                "mrope_interleaved": True,
            },
            "bos_token_id": None,
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": vision_depth,
            "hidden_size": vision_hidden,
            "intermediate_size": vision_hidden * 2,
            "num_heads": 4,
            "out_hidden_size": hidden,
            # DeepStack: the 8B merges the output of vision blocks 8, 16, 24 (of 27) into its first
            # three language layers; here blocks before the last, at most one per language layer.
            "deepstack_visual_indexes": list(range(min(layers, vision_depth - 1))),
            "num_position_embeddings": 16 * 16,  # learned grid, resampled to each image (8B: 48 x 48)
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


# --- the families and the builder ---------------------------------------------------------------


@dataclass(frozen=True)
class TinyFamily:
    label: str
    factor: int  # patch size x spatial merge: image sides are multiples of this
    min_pixels: int
    added_tokens: list[str]
    not_special: tuple[str, ...]
    config: Callable[..., PreTrainedConfig]  # (tokenizer, hidden=, layers=)
    model: type[PreTrainedModel]
    processor: Callable[..., ProcessorMixin]  # (tokenizer, min_pixels=, max_pixels=)


DEFAULT_FAMILY = "qwen2.5-vl"
TINY_FAMILIES = {
    "qwen2.5-vl": TinyFamily(
        label="Qwen2.5-VL", factor=28, min_pixels=QWEN_MIN_PIXELS,
        added_tokens=SPECIAL_TOKENS, not_special=(),
        config=tiny_config, model=Qwen2_5_VLForConditionalGeneration, processor=build_processor,
    ),
    "qwen3-vl": TinyFamily(
        label="Qwen3-VL", factor=32, min_pixels=QWEN3_MIN_PIXELS,
        added_tokens=QWEN3_VL_ADDED_TOKENS, not_special=QWEN3_VL_NOT_SPECIAL,
        config=tiny_qwen3_vl_config, model=Qwen3VLForConditionalGeneration, processor=build_qwen3_vl_processor,
    ),
}  # fmt: skip


def build_tiny_model(
    out_dir: str | Path,
    size: int = 224,
    min_pixels: int | None = None,
    hidden: int = 128,
    layers: int = 2,
    seed: int = 0,
    force: bool = False,
    family: str = DEFAULT_FAMILY,
) -> Path:
    """Build (or reuse) the tiny model folder; max_pixels = size * size matches the phantom frame,
    min_pixels defaults to the family's (four merged vision tokens)."""
    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown model family {family!r} (known: {', '.join(TINY_FAMILIES)})")
    fam = TINY_FAMILIES[family]
    if size % fam.factor:
        raise ValueError(
            f"size {size} is not a multiple of {fam.factor}: {fam.label}'s processor would resize "
            f"a {size} x {size} image, and boxes in the phantom frame would no longer match"
        )
    min_pixels = fam.min_pixels if min_pixels is None else min_pixels
    out = Path(out_dir)
    marker = out / "tiny_model.json"
    wanted = {"size": size, "min_pixels": min_pixels, "hidden": hidden, "layers": layers, "seed": seed}
    if family != DEFAULT_FAMILY:  # the default's marker stays as it was, so existing folders are reused
        wanted["family"] = family
    if not force and marker.exists() and json.loads(marker.read_text()) == wanted:
        return out
    torch.manual_seed(seed)
    tokenizer = train_tokenizer(added_tokens=fam.added_tokens, not_special=fam.not_special)
    processor = fam.processor(tokenizer, min_pixels=min_pixels, max_pixels=size * size)
    config = fam.config(tokenizer, hidden=hidden, layers=layers)
    model = fam.model(config)
    model.generation_config.eos_token_id = [config.text_config.eos_token_id]
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.do_sample = False
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    marker.write_text(json.dumps(wanted) + "\n")  # written last: a half-built folder is rebuilt
    n = sum(p.numel() for p in model.parameters())
    log.info("tiny %s: %.2fM parameters, vocab %d -> %s", fam.label, n / 1e6, len(tokenizer), out)
    return out


def main() -> None:
    setup_logging()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default=DEFAULT_FAMILY, choices=sorted(TINY_FAMILIES))
    ap.add_argument("--out", help="model folder (default: outputs/tiny-FAMILY)")
    ap.add_argument("--size", type=int, default=224, help="phantom frame side (max_pixels = size^2)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--force", action="store_true", help="rebuild even if the folder is up to date")
    args = ap.parse_args()
    try:
        path = build_tiny_model(
            args.out or f"outputs/tiny-{args.family}",
            size=args.size,
            hidden=args.hidden,
            layers=args.layers,
            force=args.force,
            family=args.family,
        )
    except ValueError as e:
        ap.error(str(e))
    print(f"tiny model ready: {path}")


if __name__ == "__main__":
    main()
