"""Model families: box conventions where text is built and read, and mismatches that stop a run."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from data_prep.families import (
    FAMILIES,
    FamilyError,
    FamilyMismatch,
    check_family,
    convert_box_text,
    from_convention,
    get_family,
    in_convention,
    model_family,
    to_convention,
)
from data_prep.frame import FrameMismatch, check_processor_frame, smart_resize, write_frame
from data_prep.phantom import generate
from data_prep.prompts import REASONING_INSTRUCTION, RELATIVE_REASONING_INSTRUCTION, question_text
from data_prep.trl_dataset import grpo_dataset, sft_dataset
from evaluation.scoring import grounded_rewards
from rewards import get_reward_funcs
from training.grpo_checks import check_reward_family

Q25, Q3 = FAMILIES["qwen2.5-vl"], FAMILIES["qwen3-vl"]
W = H = 160  # a Qwen3-VL frame (multiple of 32); pixel boxes in multiples of 16 are exact 0-1000 numbers


def record(**kw) -> dict:
    rec = {
        "id": "r1",
        "source": "phantom",
        "task": "vqa",
        "question": "Is there a nodule?",
        "answer": "yes",
        "boxes": [{"label": "nodule", "box": [32, 48, 64, 96]}],
        "image": "img.png",
        "width": W,
        "height": H,
        "patient_id": "p",
        "study_id": "s",
        "split": "train",
        "reasoning": "Right lung: Nodule [32, 48, 64, 96]. Heart [48, 80, 112, 128].",
        "meta": None,
    }
    rec.update(kw)
    return rec


def test_factors_and_conventions():
    assert (Q25.factor, Q3.factor) == (28, 32)
    assert (Q25.boxes, Q3.boxes) == ("absolute", "relative")
    assert to_convention([32, 48, 64, 96], W, H, Q3) == [200, 300, 400, 600]
    assert from_convention([200, 300, 400, 600], W, H, Q3) == [32, 48, 64, 96]
    assert to_convention([32, 48, 64, 96], W, H, Q25) == [32, 48, 64, 96]
    assert smart_resize(500, 600, 3136, 160 * 160, factor=Q3.factor) == (128, 160)


def test_text_is_built_in_the_family_convention(tmp_path):
    rec = record()
    rel = in_convention(rec, Q3)
    assert rel["reasoning"] == "Right lung: Nodule [200, 300, 400, 600]. Heart [300, 500, 700, 800]."
    assert rel["boxes"] == [{"label": "nodule", "box": [200, 300, 400, 600]}]
    assert (rel["width"], rel["height"]) == (1000, 1000)
    assert in_convention(rec, Q25) is rec  # absolute: untouched
    grounding = record(task="grounding", answer="[32, 48, 64, 96]")
    assert in_convention(grounding, Q3)["answer"] == "[200, 300, 400, 600]"
    assert convert_box_text("none here", W, H, Q3) == "none here"
    # the prompt asks for the family's convention
    assert question_text(rec, True, Q3).endswith(RELATIVE_REASONING_INSTRUCTION)
    assert question_text(rec, True, Q25).endswith(REASONING_INSTRUCTION)
    assert "0 to 1000" in RELATIVE_REASONING_INSTRUCTION and "image pixels" in REASONING_INSTRUCTION

    (tmp_path / "img.png").write_bytes(b"")  # datasets stores the path; nothing decodes it here
    ds = sft_dataset([rec], tmp_path, reasoning=True, family=Q3).with_format(None)
    row = ds.cast_column(
        "images", ds.features["images"].__class__(ds.features["images"].feature.__class__(decode=False))
    )[0]
    assert "[200, 300, 400, 600]" in row["completion"][0]["content"]
    assert "[32, 48, 64, 96]" not in row["completion"][0]["content"]


def _completion(boxes: list[list[int]], answer: str = "yes") -> str:
    cites = "; ".join(f"finding {i} {json.dumps(b).replace(',', ', ')}" for i, b in enumerate(boxes))
    return f"<think> Looking at the lungs: {cites}. </think>. The answer is: \\boxed{{{answer}}}"


def test_grounded_reward_scores_a_box_in_each_convention_identically(tmp_path):
    rec = record()
    Image.new("L", (W, H)).save(tmp_path / "img.png")
    funcs = get_reward_funcs(["answer", "format", "coordinate", "grounding"])
    scores = {}
    for fam, boxes in ((Q25, [[32, 48, 64, 96]]), (Q3, [[200, 300, 400, 600]])):
        ds = grpo_dataset([rec], tmp_path, family=fam)
        cols = {k: list(ds[k]) for k in ("solution", "boxes", "image_boxes", "width", "height", "task")}
        text = _completion(boxes)
        scores[fam.name] = [f([text], **cols)[0] for f in funcs]
        # evaluation's grounded reward reads the same convention
        assert grounded_rewards([text], [in_convention(rec, fam)])[0]["grounding"] == scores[fam.name][3]
    assert scores["qwen2.5-vl"] == scores["qwen3-vl"]
    assert scores["qwen3-vl"][3] == pytest.approx(1.0)  # the exact box
    # and a pixel box read as relative (or the reverse) is wrong, not silently right
    ds = grpo_dataset([rec], tmp_path, family=Q3)
    wrong = get_reward_funcs(["grounding"])[0](
        [_completion([[32, 48, 64, 96]])], image_boxes=list(ds["image_boxes"])
    )
    assert wrong[0] < 0.5


def test_mismatches_stop_naming_both(tiny_dir, phantom_dir, tmp_path):
    assert check_family(tiny_dir, phantom_dir, "qwen2.5-vl") == Q25
    with pytest.raises(FamilyMismatch, match=r"model_family: qwen3-vl.*qwen2\.5-vl model"):
        check_family(tiny_dir, phantom_dir, "qwen3-vl")
    q3_data = tmp_path / "q3"
    generate(2, q3_data, size=128, progress=False, family="qwen3-vl")
    assert json.loads((q3_data / "frame.json").read_text())["family"] == "qwen3-vl"
    with pytest.raises(FamilyMismatch, match=r"prepared for qwen3-vl .*multiples of 32.*qwen2\.5-vl model"):
        check_family(tiny_dir, q3_data)
    with pytest.raises(ValueError, match="multiple of 32"):
        generate(2, tmp_path / "bad", size=112, progress=False, family="qwen3-vl")


def test_unknown_families_and_models_are_one_line_errors(tmp_path):
    with pytest.raises(FamilyError, match=r"unknown model family 'qwen9' \(known: qwen2\.5-vl, qwen3-vl\)"):
        get_family("qwen9")
    with pytest.raises(FamilyError) as e:
        model_family(tmp_path / "no-such-model")
    assert str(e.value).startswith(f"cannot read the model config of {tmp_path / 'no-such-model'}: ")
    assert "\n" not in str(e.value) and "`make tiny-model`" in str(e.value)


def test_a_processor_that_would_resize_again_is_refused(tmp_path):
    from types import SimpleNamespace

    def processor(min_pixels, max_pixels, patch_size=14):
        return SimpleNamespace(
            size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
            patch_size=patch_size,
            merge_size=2,
        )

    write_frame(tmp_path, 3136, 12544)
    check_processor_frame(tmp_path, processor(3136, 12544))  # the data's frame: nothing to say
    with pytest.raises(
        FrameMismatch, match=r"prepared for min_pixels=3136, max_pixels=12544, but the processor"
    ):
        check_processor_frame(tmp_path, processor(3136, 50176))
    with pytest.raises(
        FrameMismatch, match=r"multiples of 28 \(qwen2\.5-vl\), but the processor resizes to multiples of 32"
    ):
        check_processor_frame(tmp_path, processor(3136, 12544, patch_size=16))


def test_paper_reward_refuses_a_relative_family():
    paper = get_reward_funcs(["paper_answer", "paper_format", "paper_coordinate"])
    check_reward_family(paper, Q25)
    with pytest.raises(FamilyMismatch, match=r"qwen3-vl writes boxes relative.*reward_mode: grounded"):
        check_reward_family(paper, Q3)
    check_reward_family(get_reward_funcs(["answer", "grounding"]), Q3)  # grounded mode reads both
