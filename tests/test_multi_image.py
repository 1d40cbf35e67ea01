"""A study with two images (frontal + a second view) through SFT, GRPO and evaluation on the tiny model."""

from __future__ import annotations

import json

import pytest
from transformers import AutoProcessor
from trl.data_utils import prepare_multimodal_messages

from data_prep.io import read_records
from data_prep.phantom import generate
from data_prep.schema import image_key, record_images
from data_prep.trl_dataset import grpo_dataset, image_boxes, sft_dataset
from evaluation.gallery import render_gallery
from evaluation.generation import load_images, prompt_text
from tests.conftest import TEST_SIZE, run_in_process

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_views(tmp_path_factory):
    out = tmp_path_factory.mktemp("views") / "phantom2"
    generate(16, out, seed=3, size=TEST_SIZE, progress=False, views=2)
    return out


def test_records_hold_both_views_with_boxes_on_the_first(two_views):
    recs = read_records(two_views)
    assert all(len(record_images(r)) == 2 for r in recs)
    first, second = record_images(recs[0])
    assert (two_views / first).read_bytes() != (two_views / second).read_bytes()
    # the grounding reward's per-image boxes are keyed by the first image
    boxes = image_boxes(recs)
    assert set(boxes) == {image_key(r) for r in recs}


def test_trl_rows_and_prompts_carry_two_images(two_views, tiny_dir):
    recs = [r for r in read_records(two_views, split="train") if r["task"] == "vqa"][:3]
    processor = AutoProcessor.from_pretrained(tiny_dir)
    for ds in (sft_dataset(recs, two_views, reasoning=False), grpo_dataset(recs, two_views)):
        row = ds[0]
        assert len(row["images"]) == 2
        messages = prepare_multimodal_messages(row["prompt"], row["images"])
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert text.count("<|vision_start|>") == 2
        inputs = processor(text=[text], images=row["images"], return_tensors="pt")
        assert inputs["image_grid_thw"].shape[0] == 2
    # evaluation builds the same two-image prompt, images in order
    assert prompt_text(processor, recs[0], reasoning=True).count("<|vision_start|>") == 2
    assert len(load_images(two_views, recs[0])) == 2


def test_two_view_study_trains_with_sft_and_grpo_and_is_evaluated(two_views, tiny_dir, tmp_path):
    sft = tmp_path / "sft"
    run_in_process(
        "recipes.sft", "--config", "recipes/demo/sft.yaml", "--model_name_or_path", tiny_dir,
        "--dataset_name", two_views, "--output_dir", sft, "--max_steps", "3", "--save_strategy", "no",
        "--disable_tqdm", "true", check=True,
    )  # fmt: skip
    grpo = tmp_path / "grpo"
    proc = run_in_process(
        "recipes.grpo", "--config", "recipes/demo/grpo.yaml", "--model_name_or_path", sft,
        "--dataset_name", two_views, "--output_dir", grpo, "--max_steps", "2", "--per_device_train_batch_size", "8", "--save_strategy", "no",
        "--max_completion_length", "24", "--logging_steps", "1", "--disable_tqdm", "true", "--report_to", "none", check=True,
    )  # fmt: skip
    assert "rewards/grounding/mean" in proc.stdout + proc.stderr
    assert (grpo / "model.safetensors").exists()
    ev = tmp_path / "eval"
    run_in_process(
        "evaluation.run", "--model", grpo, "--data", two_views, "--split", "test", "--limit", "6",
        "--out", ev, "--max_new_tokens", "24", "--no_model_metrics", "--gallery", "4", check=True,
    )  # fmt: skip
    results = json.loads((ev / "results.json").read_text())
    assert results["n"] == 6 and results["n_missing_predictions"] == 0
    assert "reward/grounded" in results["headline"]  # scored against the first image's boxes
    assert (ev / "gallery.html").exists()


def test_gallery_shows_the_second_view(two_views):
    recs = read_records(two_views, split="test")[:2]
    html = render_gallery(recs, {"m": {r["id"]: "x" for r in recs}}, two_views)
    assert html.count('class="view"') == 2 and "other images" in html
