"""The tiny Qwen3-VL: built and reloaded offline with Qwen3-VL-8B-Instruct's tokens and chat template;
its real processor (and the tiny Qwen2.5-VL's) resizes exactly like the frame rule; it generates."""

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen3VLForConditionalGeneration

from data_prep.frame import QWEN3_MIN_PIXELS, smart_resize
from demo.tiny_model import QWEN3_VL_ADDED_TOKENS, QWEN3_VL_NOT_SPECIAL, build_tiny_model

pytestmark = pytest.mark.slow

SIZE = 128  # smallest square frame of the demo's kind for Qwen3-VL: 4 x 4 merged tokens of 32 px
# Qwen/Qwen3-VL-8B-Instruct's chat template (5292 bytes), see demo/tiny_model.py
TEMPLATE_SHA256 = "3636d0f0bd6bef02654cdffdc447b79cb2cef8ab02cc75267345946291a489e4"
# (height, width): kept as is, half-way sides (80 / 32 = 2.5, 144 / 28 ~ 5.1), below min_pixels,
# above max_pixels, elongated both ways, odd sides
SIZES = [(128, 128), (112, 112), (80, 144), (40, 40), (512, 400), (60, 300), (300, 96), (97, 130)]


@pytest.fixture(scope="module")
def qwen3_dir(tiny_qwen3_dir):
    return tiny_qwen3_dir  # the suite's one tiny Qwen3-VL (tests/conftest.py), built with the defaults


def noise_image(height: int, width: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width), dtype=np.uint8)
    return Image.fromarray(pixels).convert("RGB")


def test_builds_and_reloads_offline(qwen3_dir):
    model = AutoModelForImageTextToText.from_pretrained(qwen3_dir)
    processor = AutoProcessor.from_pretrained(qwen3_dir)
    assert isinstance(model, Qwen3VLForConditionalGeneration)
    assert type(processor).__name__ == "Qwen3VLProcessor"
    assert type(processor.video_processor).__name__ == "Qwen3VLVideoProcessor"
    assert processor.tokenizer.padding_side == "left"
    ip = processor.image_processor
    assert (ip.patch_size, ip.merge_size, ip.temporal_patch_size) == (16, 2, 2)
    assert ip.size == {"shortest_edge": QWEN3_MIN_PIXELS, "longest_edge": SIZE * SIZE}

    vision, text = model.config.vision_config, model.config.text_config
    assert (vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size) == (16, 2, 2)
    deepstack = vision.deepstack_visual_indexes  # intermediate blocks, each feeding one language layer
    assert 1 <= len(deepstack) <= text.num_hidden_layers and max(deepstack) < vision.depth - 1
    rope = text.rope_parameters
    assert rope["mrope_interleaved"] and sum(rope["mrope_section"]) == text.head_dim // 2
    assert model.config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert 0.8e6 < sum(p.numel() for p in model.parameters()) < 1.3e6

    weights = qwen3_dir / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    assert build_tiny_model(qwen3_dir, size=SIZE, family="qwen3-vl") == qwen3_dir  # same settings: reused
    assert weights.stat().st_mtime_ns == mtime


def test_tokens_and_chat_template_are_qwen3_vl_8b(qwen3_dir):
    processor = AutoProcessor.from_pretrained(qwen3_dir)
    tok = processor.tokenizer
    for t in QWEN3_VL_ADDED_TOKENS:  # every added token is one token
        assert len(tok.tokenize(t)) == 1, t
    ids = tok("<|im_start|>assistant\n<think> The heart is enlarged. </think>.<|im_end|>")["input_ids"]
    # <think> is a plain added token in Qwen3 (not special): it survives into the text rewards read
    assert "<think>" in QWEN3_VL_NOT_SPECIAL and "<|im_end|>" not in QWEN3_VL_NOT_SPECIAL
    assert tok.decode(ids, skip_special_tokens=True) == "assistant\n<think> The heart is enlarged. </think>."

    assert hashlib.sha256(processor.chat_template.encode()).hexdigest() == TEMPLATE_SHA256
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A chest X-ray."}]},
        {"role": "user", "content": [{"type": "text", "text": "Any effusion?"}]},
    ]
    # Qwen3-VL-8B-Instruct's template: no default system turn (Qwen2.5-VL's has one)
    assert processor.apply_chat_template(conversation, add_generation_prompt=True) == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe this image.<|im_end|>\n"
        "<|im_start|>assistant\nA chest X-ray.<|im_end|>\n"
        "<|im_start|>user\nAny effusion?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with_system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert processor.apply_chat_template(with_system) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    )
    assert "Picture 1: <|vision_start|>" in processor.apply_chat_template(
        conversation[:1], add_vision_id=True
    )


@pytest.mark.parametrize(
    "model_dir, patch, factor",
    [("tiny_dir", 14, 28), ("qwen3_dir", 16, 32)],  # the tiny Qwen2.5-VL (conftest, size 112) and Qwen3-VL
    ids=["qwen2.5-vl", "qwen3-vl"],
)
def test_processor_resizes_like_the_frame_rule(request, model_dir, patch, factor):
    """data_prep.frame.smart_resize (the frame rule data prep applies) = the real processor's resize."""
    ip = AutoProcessor.from_pretrained(request.getfixturevalue(model_dir)).image_processor
    assert ip.patch_size * ip.merge_size == factor
    min_pixels, max_pixels = ip.size["shortest_edge"], ip.size["longest_edge"]
    for h, w in SIZES:
        out = ip(images=[noise_image(h, w)], return_tensors="pt")
        t, gh, gw = out["image_grid_thw"][0].tolist()
        assert (gh * patch, gw * patch) == smart_resize(h, w, min_pixels, max_pixels, factor=factor), (h, w)
        assert t == 1 and out["pixel_values"].shape[0] == gh * gw


def test_one_image_prompt_expands_to_its_tokens(qwen3_dir):
    processor = AutoProcessor.from_pretrained(qwen3_dir)
    tok = processor.tokenizer
    start, end, pad = tok.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>"])
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is there a nodule?"}]}
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text.count("<|vision_start|>") == 1
    for h, w in [(SIZE, SIZE), (96, 160), (300, 96)]:
        inputs = processor(text=[text], images=[noise_image(h, w)], return_tensors="pt")
        ids = inputs["input_ids"][0]
        h_bar, w_bar = smart_resize(h, w, QWEN3_MIN_PIXELS, SIZE * SIZE, factor=32)
        n = (h_bar // 32) * (w_bar // 32)
        assert ((ids == start).sum(), (ids == end).sum(), (ids == pad).sum()) == (1, 1, n), (h, w)
        i = int((ids == start).nonzero())
        assert (ids[i + 1 : i + 1 + n] == pad).all() and ids[i + 1 + n] == end  # one contiguous run
        assert inputs["mm_token_type_ids"][0].bool().equal(ids == pad)  # M-RoPE reads these


def test_generates_on_a_128_image(qwen3_dir):
    model = AutoModelForImageTextToText.from_pretrained(qwen3_dir)
    processor = AutoProcessor.from_pretrained(qwen3_dir)
    prompts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
            add_generation_prompt=True,
        )
        for question in ("Is there a pleural effusion on the right side?", "Is there a nodule?")
    ]
    image = noise_image(SIZE, SIZE)
    inputs = processor(text=prompts, images=[image, image], return_tensors="pt", padding=True)
    assert (
        inputs["input_ids"][1, 0] == processor.tokenizer.pad_token_id
    )  # the shorter prompt padded on the left
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    n_prompt = inputs["input_ids"].shape[1]
    assert n_prompt < out.shape[1] <= n_prompt + 5  # generated at least one token, at most five
    assert all(
        isinstance(s, str) for s in processor.batch_decode(out[:, n_prompt:], skip_special_tokens=True)
    )


def test_one_training_step_reaches_every_parameter(qwen3_dir):
    """Loss on a prompt + completion with an image: gradients reach all weights, the DeepStack mergers too."""
    model = AutoModelForImageTextToText.from_pretrained(qwen3_dir)
    processor = AutoProcessor.from_pretrained(qwen3_dir)
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is there a nodule?"}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "<think> The lungs are clear. </think>."}],
        },
    ]
    text = processor.apply_chat_template(conversation)
    inputs = processor(text=[text], images=[noise_image(SIZE, SIZE)], return_tensors="pt")
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()] == []


def test_phantom_and_tiny_model_share_one_qwen3_frame(qwen3_dir, qwen3_phantom_dir):
    """One documented Qwen3-VL frame for the demo's kind of data (data_prep.frame.QWEN3_MIN_PIXELS):
    the phantom data records it and the tiny model's processor resizes with it."""
    frame = json.loads((qwen3_phantom_dir / "frame.json").read_text())
    size = AutoProcessor.from_pretrained(qwen3_dir).image_processor.size
    assert frame["min_pixels"] == size["shortest_edge"] == QWEN3_MIN_PIXELS
    assert frame["max_pixels"] == size["longest_edge"] == SIZE * SIZE and frame["family"] == "qwen3-vl"
