"""Bad input at the training entry points: image content (corrupt, not an image, a
decompression bomb, outside the frame, not the record's size), a dataset without frame.json, rows longer
than max_length, incomplete checkpoints, and random mixes of bad rows. Each is a bad row or a one-line
stop naming what to fix, never a crash mid-run."""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import zlib
from collections import Counter
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from data_prep import image_check
from data_prep.frame import processor_rule
from data_prep.io import IMAGE_ROOTS_ENV, read_records, write_jsonl
from data_prep.schema import RecordError, make_record
from data_prep.trl_dataset import BadRowsError, load_checked_records, reason_kind, sft_row
from tests.conftest import run_in_process
from tests.test_sft import sft_args
from training.common import CheckpointError, FrameMissing, last_checkpoint, load_processor

W = H = 56
RULE = (3136, W * H, 28)  # a 56 x 56 frame: min = max = 3136 pixels, sides in multiples of 28


def record(i: int, image: str, rid: str | None = None, **fields) -> dict:
    rec = make_record(
        id=rid or f"r{i}", source="phantom", task="vqa", question=f"Question {i}?", answer="yes", boxes=[],
        image=image, width=W, height=H, patient_id=f"p{i}", study_id=f"s{i}", split="train",
    )  # fmt: skip
    return {**rec, **fields}


def make_dataset(root: Path, n: int = 3) -> list[dict]:
    (root / "images").mkdir(parents=True)
    recs = []
    for i in range(n):
        Image.new("L", (W, H), 30 + i).save(root / "images" / f"{i}.png")
        recs.append(record(i, f"images/{i}.png"))
    write_jsonl(root / "records.jsonl", recs)
    (root / "frame.json").write_text(json.dumps({"min_pixels": RULE[0], "max_pixels": RULE[1], "factor": 28}))
    return recs


def bomb_png(w: int = 20000, h: int = 20000) -> bytes:
    """A valid PNG header claiming w x h pixels over a few bytes of data: what a decompression bomb shows PIL."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def truncated_png(size=(W, H)) -> bytes:
    path = Path(tempfile.mkdtemp()) / "x.png"
    Image.effect_noise(size, 64).save(path)  # noise: the pixel data is most of the file
    data = path.read_bytes()
    shutil.rmtree(path.parent)
    return data[: len(data) // 2]


# ---------------------------------------------------------------- 1. image content


@pytest.mark.parametrize(
    "content, kind",
    [
        (lambda: truncated_png(), "unreadable image"),
        (lambda: b"not an image at all\n", "unreadable image"),
        (lambda: b"", "unreadable image"),
        (lambda: bomb_png(), "image over the pixel limit"),
    ],
    ids=["truncated", "text", "empty", "bomb"],
)
def test_images_that_do_not_decode_are_bad_rows(tmp_path, content, kind):
    data = tmp_path / "data"
    make_dataset(data, 3)
    (data / "images" / "1.png").write_bytes(content())

    with pytest.raises(BadRowsError) as stop:
        load_checked_records(data, "train", frame=RULE)
    message, image = str(stop.value), (data / "images" / "1.png").resolve()
    assert "\n" not in message  # one bad row, one line: where, why, the fix
    assert message.startswith(
        f"bad row in split 'train': {data / 'records.jsonl'}:2 (id='r1'): {kind}: {image}"
    )
    assert "skip_bad_rows: true" in str(stop.value)

    bad: list = []
    good = load_checked_records(data, "train", frame=RULE, skip_bad_rows=True, bad_rows=bad)
    assert [r["id"] for r in good] == ["r0", "r2"]
    assert [(w.split("/")[-1], reason_kind(r)) for w, r in bad] == [("records.jsonl:2 (id='r1')", kind)]
    assert len(load_checked_records(data, "train")) == 3  # without a frame: the path-only check


def test_the_image_check_is_cached_per_file(tmp_path, monkeypatch):
    data = tmp_path / "data"
    make_dataset(data, 3)
    decoded = []
    real = image_check.decode_problem
    monkeypatch.setattr(image_check, "decode_problem", lambda p: decoded.append(p.name) or real(p))

    load_checked_records(data, "train", frame=RULE)
    assert sorted(decoded) == ["0.png", "1.png", "2.png"]
    assert (data / image_check.CACHE_FILE).exists()
    load_checked_records(data, "train", frame=RULE)
    assert len(decoded) == 3  # a rerun decodes nothing

    (data / "images" / "1.png").write_bytes(truncated_png())  # a changed file is checked again
    with pytest.raises(BadRowsError, match=r":2 \(id='r1'\): unreadable image: "):
        load_checked_records(data, "train", frame=RULE)
    assert decoded[3:] == ["1.png"]

    (data / image_check.CACHE_FILE).write_text("{not json")  # a damaged cache costs a re-check only
    assert len(load_checked_records(data, "train", frame=RULE, skip_bad_rows=True)) == 2

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    (data / image_check.CACHE_FILE).unlink()
    monkeypatch.setattr(image_check, "atomic_write_text", read_only)  # a read-only dataset folder
    assert len(load_checked_records(data, "train", frame=RULE, skip_bad_rows=True)) == 2
    assert not (data / image_check.CACHE_FILE).exists()


# ---------------------------------------------------------------- 2. the frame


def test_images_the_processor_would_resize_are_bad_rows(tmp_path):
    data = tmp_path / "data"
    recs = make_dataset(data, 4)
    Image.new("L", (112, 112)).save(data / "images" / "big.png")  # over max_pixels
    Image.new("L", (60, 52)).save(data / "images" / "odd.png")  # sides not multiples of 28
    recs[1] = record(1, "images/big.png", width=112, height=112)
    recs[2] = record(2, "images/odd.png", width=60, height=52)
    recs[3] = record(3, ["images/3.png", "images/big.png"])  # a second view out of the frame too
    write_jsonl(data / "records.jsonl", recs)

    bad: list = []
    good = load_checked_records(data, "train", frame=RULE, skip_bad_rows=True, bad_rows=bad)
    assert [r["id"] for r in good] == ["r0"]
    reasons = dict((w.split(":")[-1].split()[0], r) for w, r in bad)
    assert (
        reasons["2"].startswith("image larger than the frame: ")
        and "112x112 = 12544 pixels, over max_pixels=3136" in reasons["2"]
    )
    assert "would resize" in reasons["3"] and "from 60x52 to 56x56" in reasons["3"]
    assert reasons["4"].startswith("image larger than the frame: ") and "big.png" in reasons["4"]
    # the same images fit a frame that holds them: the rule is the processor's, checked every run
    bad = []
    ok = load_checked_records(data, "train", frame=(3136, 112 * 112, 28), skip_bad_rows=True, bad_rows=bad)
    assert [r["id"] for r in ok] == ["r0", "r1", "r3"] and [reason_kind(r) for _, r in bad] == [
        "image not in the model frame"
    ]


def test_a_dataset_without_frame_json_needs_the_frame_from_the_recipe(tmp_path, tiny_dir):
    data = tmp_path / "data"
    make_dataset(data, 2)
    (data / "frame.json").unlink()
    with pytest.raises(FrameMissing) as stop:
        load_processor(str(tiny_dir), str(data), None, None, require_frame=True)
    message = str(stop.value)
    assert "\n" not in message and f"{data / 'frame.json'} not found" in message
    assert "--min_pixels N --max_pixels N" in message
    with pytest.raises(FrameMissing):  # half a frame is no frame
        load_processor(str(tiny_dir), str(data), None, 3136, require_frame=True)
    processor = load_processor(str(tiny_dir), str(data), 3136, 3136, require_frame=True)
    assert processor_rule(processor.image_processor) == RULE
    assert load_processor(str(tiny_dir), str(data), None, None)  # evaluation: the processor's own frame


@pytest.mark.slow
def test_sft_without_frame_json_stops_with_the_fix(tiny_dir, phantom_dir, tmp_path):
    data = tmp_path / "noframe"
    shutil.copytree(phantom_dir, data)
    (data / "frame.json").unlink()
    proc = run_in_process("recipes.sft", *sft_args(tiny_dir, data, tmp_path / "o", "--max_steps", "1"))
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in err
    assert f"{data / 'frame.json'} not found" in err and "--min_pixels N --max_pixels N" in err


# ---------------------------------------------------------------- 1 + 3. the SFT run


def small_set(phantom_dir: Path, out: Path, n: int = 8) -> list[dict]:
    """A copy of the phantom set holding only n short train rows (vqa): a tiny, fast training set."""
    shutil.copytree(phantom_dir, out)
    recs = [r for r in read_records(out, split="train") if r["task"] == "vqa"][:n]
    write_jsonl(out / "records.jsonl", recs)
    return recs


@pytest.mark.slow
def test_sft_with_a_corrupt_image_names_the_row_or_trains_on_the_rest(tiny_dir, phantom_dir, tmp_path):
    data = tmp_path / "data"
    recs = small_set(phantom_dir, data)
    (data / "images" / "corrupt.png").write_bytes(truncated_png((112, 112)))
    recs[3]["image"] = "images/corrupt.png"
    write_jsonl(data / "records.jsonl", recs)

    proc = run_in_process("recipes.sft", *sft_args(tiny_dir, data, tmp_path / "o", "--max_steps", "1"))
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in err
    last = proc.stderr.strip().splitlines()[-1]  # the whole error: one line
    assert last.startswith(
        f"bad row in split 'train': {data / 'records.jsonl'}:4 (id='{recs[3]['id']}'): unreadable image: "
    )
    assert last.endswith("set `skip_bad_rows: true` in the recipe to train without it.")

    ok = run_in_process(
        "recipes.sft",
        *sft_args(tiny_dir, data, tmp_path / "o2", "--max_steps", "1", "--skip_bad_rows", "true"),
        check=True,
    )
    assert "skipped 1 bad row(s)" in (ok.stdout + ok.stderr) and "{'unreadable image': 1}" in (
        ok.stdout + ok.stderr
    )
    assert "SFT on 7 records" in (ok.stdout + ok.stderr)
    assert (tmp_path / "o2" / "model.safetensors").exists()


def test_row_tokens_count_what_trls_collator_builds(phantom_dir, tiny_dir):
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from training.lengths import row_tokens

    processor = load_processor(str(tiny_dir), str(phantom_dir), None, None, require_frame=True)
    collator = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)
    for rec in read_records(phantom_dir, split="train")[:3]:
        row = sft_row(rec, phantom_dir, reasoning=False)
        prompt, completion = row_tokens(row, processor)
        batch = collator([{**row, "images": [Image.open(p) for p in row["images"]]}])
        assert batch["input_ids"].shape[1] == prompt + completion
        assert int((batch["labels"] != -100).sum()) == completion  # the loss is on the completion only


@pytest.mark.slow
def test_sft_counts_rows_longer_than_max_length_and_refuses_when_none_fits(tiny_dir, phantom_dir, tmp_path):
    data = tmp_path / "data"
    recs = small_set(phantom_dir, data)
    for rec in recs[:2]:
        rec["answer"] = " ".join(["consolidation"] * 600)  # ~600 tokens: over the demo max_length 512
    write_jsonl(data / "records.jsonl", recs)

    proc = run_in_process("recipes.sft", *sft_args(tiny_dir, data, tmp_path / "o", "--max_length", "40"))
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in err
    line = next(x for x in err.splitlines() if "no train row fits" in x)
    assert line.startswith(
        "no train row fits max_length=40 tokens (image tokens included): the shortest has "
    )
    assert "--max_length" in line

    ok = run_in_process(
        "recipes.sft", *sft_args(tiny_dir, data, tmp_path / "o2", "--max_steps", "1"), check=True
    )
    assert "2 of 8 train rows longer than max_length=512 tokens (image tokens included): dropped" in (
        ok.stdout + ok.stderr
    )
    assert "SFT on 6 records" in (ok.stdout + ok.stderr)


def test_long_rows_drop_or_truncate(phantom_dir, tiny_dir, caplog):
    from types import SimpleNamespace

    from training.lengths import fit_max_length

    processor = load_processor(str(tiny_dir), str(phantom_dir), None, None, require_frame=True)
    recs = [r for r in read_records(phantom_dir, split="train") if r["task"] == "vqa"][:6]
    recs[0] = {**recs[0], "answer": " ".join(["consolidation"] * 600)}
    args = SimpleNamespace(dataset_name=str(phantom_dir), reasoning=False, long_rows="drop")
    caplog.set_level("INFO", logger="training.lengths")
    assert fit_max_length(recs, args, None, processor, 512, "train") == recs[1:]
    assert (
        "1 of 6 train rows longer than max_length=512 tokens (image tokens included): dropped" in caplog.text
    )
    caplog.clear()
    args.long_rows = "truncate"  # kept, cut: its prompt fits with part of its completion
    assert fit_max_length(recs, args, None, processor, 512, "train") == recs
    assert "1 cut to max_length (long_rows: truncate), 0 dropped" in caplog.text
    assert fit_max_length(recs, args, None, processor, None, "train") == recs  # no max_length: nothing cut
    with pytest.raises(BadRowsError, match="no train row fits max_length=20 tokens"):  # prompts alone over it
        fit_max_length(recs, args, None, processor, 20, "train")


@pytest.mark.slow
def test_grpo_with_a_corrupt_image_names_the_row(tiny_dir, phantom_dir, tmp_path):
    from tests.test_grpo import grpo_args

    data = tmp_path / "data"
    recs = small_set(phantom_dir, data)
    (data / "images" / "corrupt.png").write_text("not a PNG")
    recs[5]["image"] = "images/corrupt.png"
    write_jsonl(data / "records.jsonl", recs)
    proc = run_in_process("recipes.grpo", *grpo_args(tiny_dir, data, tmp_path / "o", "--max_steps", "1"))
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in err
    assert f"records.jsonl:6 (id='{recs[5]['id']}'): unreadable image: " in err


# ---------------------------------------------------------------- 4. resume


COMPLETE = ("trainer_state.json", "model.safetensors", "optimizer.pt", "scheduler.pt")


def checkpoint(out: Path, step: int, files=COMPLETE, leave_out: tuple = ()) -> Path:
    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    for name in files:
        if name not in leave_out:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(b"x")
    return folder


def test_resume_picks_the_newest_checkpoint_that_has_weights_and_optimizer(tmp_path, caplog):
    out = tmp_path / "run"
    good = checkpoint(out, 2)
    checkpoint(out, 4, leave_out=("model.safetensors",))
    checkpoint(out, 6, leave_out=("optimizer.pt",))
    checkpoint(out, 8, leave_out=("trainer_state.json",))
    caplog.set_level("INFO", logger="training.common")

    assert last_checkpoint(str(out), resume=True) == str(good)
    for step, reason in [(8, "no trainer_state.json"), (6, "no optimizer state"), (4, "no model weights")]:
        assert any(
            f"skipping incomplete checkpoint {out}/checkpoint-{step}: {reason}" in m for m in caplog.messages
        )
    assert f"resuming from {good}" in caplog.messages
    assert last_checkpoint(str(out), resume=False) is None


def test_adapter_deepspeed_and_sharded_checkpoints(tmp_path):
    out = tmp_path / "run"
    lora = checkpoint(
        out, 1, ("trainer_state.json", "adapter_model.safetensors", "optimizer.pt", "scheduler.pt")
    )
    assert last_checkpoint(str(out), True) == str(lora)
    zero3 = checkpoint(
        out,
        2,
        (
            "trainer_state.json",
            "global_step2/mp_rank_00_model_states.pt",
            "global_step2/zero_pp_rank_0_mp_rank_00_optim_states.pt",
        ),
    )
    assert last_checkpoint(str(out), True) == str(zero3)
    checkpoint(out, 3, ("trainer_state.json", "global_step3/mp_rank_00_model_states.pt"))
    sharded = checkpoint(out, 4, ("trainer_state.json", "optimizer.pt", "scheduler.pt", "a.safetensors"))
    index = {"weight_map": {"x": "a.safetensors", "y": "b.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    assert last_checkpoint(str(out), True) == str(zero3)  # 4 lacks a shard, 3 its optimizer states
    (sharded / "b.safetensors").write_bytes(b"x")
    assert last_checkpoint(str(out), True) == str(sharded)


def test_a_folder_of_incomplete_checkpoints_stops_and_says_how_to_start_fresh(tmp_path):
    out = tmp_path / "run"
    checkpoint(out, 4, leave_out=("model.safetensors",))
    checkpoint(out, 6, leave_out=("optimizer.pt", "scheduler.pt"))
    with pytest.raises(CheckpointError) as stop:
        last_checkpoint(str(out), resume=True)
    message = str(stop.value)
    assert "\n" not in message and f"{out} holds checkpoints but none can be resumed from" in message
    assert "checkpoint-6 (no optimizer state" in message and "checkpoint-4 (no model weights" in message
    assert "--output_dir" in message and "--resume false" in message
    assert last_checkpoint(str(out), resume=False) is None  # the user's call: start fresh
    assert last_checkpoint(str(tmp_path / "new"), resume=True) is None


# ---------------------------------------------------------------- 5. random bad datasets

KINDS = {  # row kind -> the reason it is counted under (None: a good row; "" : another split, not read)
    "good": None,
    "bad json": "not valid JSON",
    "not utf-8": "not valid UTF-8",
    "missing field": "missing field(s)",
    "outside": "image outside the dataset folder",
    "nul in path": "unusable image path",
    "truncated image": "unreadable image",
    "not an image": "unreadable image",
    "bomb": "image over the pixel limit",
    "out of frame": "image not in the model frame",
    "wrong width/height": "width/height disagree with the image",
    "duplicate id": "duplicate id",
    "validation row": "",
}


def build(data: Path, outside: Path, kinds: list[str]) -> tuple[list[str], Counter, set[int]]:
    """Write a dataset with one row per kind; returns (good ids, bad reasons counted, bad line numbers)."""
    (data / "images").mkdir(parents=True)
    (data / "frame.json").write_text(json.dumps({"min_pixels": RULE[0], "max_pixels": RULE[1], "factor": 28}))
    lines, good, reasons, bad_lines, ids = [], [], Counter(), set(), []
    for i, kind in enumerate(kinds):
        image = f"images/{i}.png"
        Image.new("L", (W, H), i % 256).save(data / image)
        rec = record(i, image)
        if kind == "duplicate id" and ids:
            rec["id"] = ids[-1]
        elif kind == "duplicate id":
            kind = "good"  # nothing to duplicate yet
        if kind == "missing field":
            del rec["answer"]
        elif kind == "outside":
            rec["image"] = str(outside)
        elif kind == "nul in path":
            rec["image"] = "images/\0.png"
        elif kind == "truncated image":
            (data / image).write_bytes(truncated_png())
        elif kind == "not an image":
            (data / image).write_text("<html>404</html>")
        elif kind == "bomb":
            (data / image).write_bytes(bomb_png())
        elif kind == "out of frame":
            Image.new("L", (W, 28)).save(data / image)
            rec["height"] = 28
        elif kind == "wrong width/height":
            rec["width"] = 2 * W
        elif kind == "validation row":
            rec["split"] = "validation"
        line = json.dumps(rec).encode()
        if kind == "bad json":
            line = line[: len(line) // 2]
        elif kind == "not utf-8":
            line = line.replace(b"Question", b"Qu\xe9stion")
        else:
            ids.append(rec["id"])
        lines.append(line)
        if kind == "good":
            good.append(rec["id"])
        elif KINDS[kind]:
            reasons[KINDS[kind]] += 1
            bad_lines.add(i + 1)
    (data / "records.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return good, reasons, bad_lines


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=8))
def test_random_bad_datasets_load_as_exactly_their_good_rows(kinds):
    with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ):
        os.environ.pop(IMAGE_ROOTS_ENV, None)
        outside = Path(tmp) / "secret.png"
        Image.new("L", (W, H)).save(outside)
        data = Path(tmp) / "data"
        good, reasons, bad_lines = build(data, outside, kinds)
        for _ in range(2):  # the second read answers from the image check cache
            bad: list = []
            try:
                rows = load_checked_records(data, "train", frame=RULE, skip_bad_rows=True, bad_rows=bad)
            except (BadRowsError, RecordError) as e:  # only when no good row is left
                assert not good and "\n" not in str(e) and "no usable records" in str(e)
            else:
                assert [r["id"] for r in rows] == good
            assert Counter(reason_kind(r) for _, r in bad) == reasons
            assert {int(w.split(":")[1].split()[0]) for w, _ in bad} == bad_lines
            assert all("\n" not in r for _, r in bad)
