"""The demo's tiny model: Qwen2.5-VL architecture, built and reloaded offline, chat template exact."""

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen2_5_VLForConditionalGeneration

from data_prep.prompts import answer_text, build_prompt, reasoning_text
from data_prep.trl_dataset import trl_prompt
from demo.tiny_model import SPECIAL_TOKENS, build_tiny_model

RECORD = {
    "id": "x",
    "question": "Is there a nodule?",
    "answer": "no",
    "image": "images/x.png",
    "reasoning": "The lungs [1, 2, 30, 40] are clear.",
}


def build_completion(record: dict, reasoning: bool) -> list[dict]:
    """The assistant turn SFT trains on, as structured content (data_prep.trl_dataset.sft_row's text)."""
    text = (
        reasoning_text(record["reasoning"], record["answer"]) if reasoning else answer_text(record["answer"])
    )
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def test_builds_reloads_offline_and_generates(tiny_dir):
    model = AutoModelForImageTextToText.from_pretrained(tiny_dir)
    processor = AutoProcessor.from_pretrained(tiny_dir)
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration)
    assert processor.tokenizer.padding_side == "left"
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    for tok in SPECIAL_TOKENS:  # Qwen2.5-VL's special tokens are single tokens
        assert len(processor.tokenizer.tokenize(tok)) == 1, tok
    assert model.config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (112, 112), dtype=np.uint8)).convert(
        "RGB"
    )
    text = processor.apply_chat_template(build_prompt(RECORD, reasoning=True), add_generation_prompt=True)
    inputs = processor(
        text=[text, text[:-30] + text[-30:]], images=[image, image], return_tensors="pt", padding=True
    )
    assert (inputs["input_ids"] == model.config.image_token_id).sum() == 2 * (112 // 28) ** 2
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    n_prompt = inputs["input_ids"].shape[1]
    assert n_prompt < out.shape[1] <= n_prompt + 5  # generated at least one token, at most five
    assert torch.equal(out[0], out[1])  # same prompt, greedy, left padding: same continuation


def test_rebuild_is_reused_and_deterministic(tmp_path, tiny_dir):
    again = build_tiny_model(tiny_dir, size=112, hidden=64, layers=2)  # same settings: reused, not rebuilt
    assert again == tiny_dir
    a = build_tiny_model(tmp_path / "a", size=112, hidden=64, layers=2)
    sd_a = AutoModelForImageTextToText.from_pretrained(a).state_dict()
    sd_b = AutoModelForImageTextToText.from_pretrained(tiny_dir).state_dict()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


def test_chat_template_renders_like_qwen2_5_vl(tiny_dir):
    processor = AutoProcessor.from_pretrained(tiny_dir)
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A chest X-ray."}]},
        {"role": "user", "content": [{"type": "text", "text": "Any effusion?"}]},
    ]
    # Qwen/Qwen2.5-VL-7B-Instruct's template: default system turn, image placeholder, generation prompt.
    expected = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe this image.<|im_end|>\n"
        "<|im_start|>assistant\nA chest X-ray.<|im_end|>\n"
        "<|im_start|>user\nAny effusion?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert processor.apply_chat_template(conversation, add_generation_prompt=True) == expected
    with_system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert processor.apply_chat_template(with_system) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    )
    picture = processor.apply_chat_template(conversation[:1], add_vision_id=True)
    assert "Picture 1: <|vision_start|>" in picture


def test_trl_string_prompt_renders_like_structured_prompt(tiny_dir):
    """TRL inserts the image placeholder before the text; the result equals data_prep.prompts.build_prompt."""
    from trl.data_utils import prepare_multimodal_messages

    processor = AutoProcessor.from_pretrained(tiny_dir)
    for reasoning in (False, True):
        ours = processor.apply_chat_template(
            build_prompt(RECORD, reasoning) + build_completion(RECORD, reasoning)
        )
        trl_msgs = prepare_multimodal_messages(trl_prompt(RECORD, reasoning), images=["img"])
        trl_msgs = [
            {**m, "content": [c if c["type"] != "image" else {"type": "image"} for c in m["content"]]}
            for m in trl_msgs
        ]
        theirs = processor.apply_chat_template(trl_msgs + build_completion(RECORD, reasoning))
        assert ours == theirs
    assert "\\boxed{no}" in ours and "<think> The lungs [1, 2, 30, 40] are clear. </think>" in ours
