"""Bad input in a dataset folder: an image path that leads out of the folder, a byte that
is not UTF-8, a duplicate id. Each is a bad row naming file:line, the id and the reason, never a
traceback, and no file a record merely names is ever opened."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from data_prep.frame import write_frame
from data_prep.io import (
    IMAGE_ROOTS_ENV,
    ImagePathError,
    image_paths,
    iter_jsonl,
    read_records,
    resolve_image,
    write_jsonl,
)
from data_prep.schema import RecordError, make_record
from data_prep.synthesis import coldstart
from data_prep.trl_dataset import BadRowsError, load_checked_records

W, H = 56, 56


def record(i: int, image: str | list[str], split: str = "train", rid: str | None = None) -> dict:
    return make_record(
        id=rid or f"r{i}",
        source="phantom",
        task="vqa",
        question=f"Question {i}?",
        answer="yes",
        boxes=[],
        image=image,
        width=W,
        height=H,
        patient_id=f"p{i}",
        study_id=f"s{i}",
        split=split,
        reasoning="The heart [1, 2, 30, 40] is enlarged.",
    )


def make_dataset(root: Path, n: int = 3) -> list[dict]:
    (root / "images").mkdir(parents=True)
    recs = []
    for i in range(n):
        Image.new("L", (W, H), 30 + i).save(root / "images" / f"{i}.png")
        recs.append(record(i, f"images/{i}.png"))
    write_jsonl(root / "records.jsonl", recs)
    write_frame(root, 3136, W * H)
    return recs


@pytest.fixture
def outside(tmp_path) -> Path:
    """A file outside every dataset folder, like /etc/passwd (a real image, so only the path check stops it)."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    Image.new("L", (W, H), 200).save(folder / "secret.png")
    return folder / "secret.png"


def escapes(data: Path, outside: Path) -> dict[str, str]:
    """Three ways a record can point out of ``data``: ../ traversal, an absolute path, a symlink."""
    (data / "images" / "link.png").symlink_to(outside)
    return {
        "traversal": "../" * len(data.resolve().parts) + str(outside.resolve()).lstrip("/"),
        "relative ..": "images/../../elsewhere/secret.png",
        "absolute": str(outside.resolve()),
        "symlink": "images/link.png",
    }


# ---------------------------------------------------------------- image paths


def test_image_paths_outside_the_dataset_folder_are_refused(tmp_path, outside, monkeypatch):
    monkeypatch.delenv(IMAGE_ROOTS_ENV, raising=False)
    data = tmp_path / "data"
    make_dataset(data)
    for kind, image in escapes(data, outside).items():
        with pytest.raises(ImagePathError, match="image outside the dataset folder") as e:
            resolve_image(data, image)
        assert str(outside.resolve()) in str(e.value) and IMAGE_ROOTS_ENV in str(e.value), kind
        with pytest.raises(ImagePathError, match=r"\(id='r9'\): image outside"):
            image_paths(data, record(9, ["images/0.png", image]))  # any view of a multi-image record
        assert isinstance(e.value, RecordError)
    # inside stays fine: a relative path, an absolute one into the folder, a symlink within it
    (data / "images" / "inner.png").symlink_to(data / "images" / "1.png")
    assert resolve_image(data, "images/0.png") == (data / "images" / "0.png").resolve()
    assert resolve_image(data, str((data / "images" / "0.png").resolve())).exists()
    assert resolve_image(data, "images/./../images/inner.png") == (data / "images" / "1.png").resolve()


def test_allowed_image_roots_from_frame_json_and_the_environment(tmp_path, outside, monkeypatch):
    monkeypatch.delenv(IMAGE_ROOTS_ENV, raising=False)
    data = tmp_path / "data"
    make_dataset(data)
    with pytest.raises(ImagePathError):
        resolve_image(data, str(outside))
    monkeypatch.setenv(IMAGE_ROOTS_ENV, f"{tmp_path / 'nothing-here'}:{outside.parent}")
    assert resolve_image(data, str(outside)) == outside.resolve()
    monkeypatch.delenv(IMAGE_ROOTS_ENV)
    write_frame(data, 3136, W * H, image_roots=[str(outside.parent)])  # as data_prep.mixture writes it
    assert resolve_image(data, "../elsewhere/secret.png") == outside.resolve()
    (data / "frame.json").write_text(json.dumps({"min_pixels": 1, "max_pixels": 2, "image_roots": "/"}))
    with pytest.raises(RecordError, match="'image_roots' must be a list"):
        resolve_image(data, "images/0.png")


def test_training_rows_with_an_image_outside_are_bad_rows(tmp_path, outside, monkeypatch):
    monkeypatch.delenv(IMAGE_ROOTS_ENV, raising=False)
    data = tmp_path / "data"
    recs = make_dataset(data)
    bad = [record(10 + k, image) for k, image in enumerate(escapes(data, outside).values())]
    write_jsonl(data / "records.jsonl", recs + bad)

    with pytest.raises(BadRowsError) as stop:
        load_checked_records(data, "train")
    message = str(stop.value)
    assert message.startswith(f"{len(bad)} bad row(s) in split 'train' of {data / 'records.jsonl'}: ")
    assert "\n" not in message  # one line: the entry point prints it as it is
    assert f"{data / 'records.jsonl'}:4 (id='r10'): image outside the dataset folder: " in message
    assert all(f"(id='r{10 + k}'): image outside" in message for k in range(len(bad)))
    assert "skip_bad_rows: true" in message

    good = load_checked_records(data, "train", skip_bad_rows=True)
    assert [r["id"] for r in good] == [r["id"] for r in recs]


class NoTemplate:
    def apply_chat_template(self, *args, **kwargs) -> str:
        return ""


def test_every_reader_of_record_images_is_confined(tmp_path, outside, monkeypatch):
    """generation (eval), the gallery, the review study, the EasyR1 export, GRPO's prompt lengths."""
    from data_prep.converters.easyr1 import export
    from evaluation.gallery import render_gallery
    from evaluation.generation import load_images
    from evaluation.review.study import StudyError, _select_records
    from training.lengths import prompt_tokens

    monkeypatch.delenv(IMAGE_ROOTS_ENV, raising=False)
    data = tmp_path / "data"
    recs = make_dataset(data, 1)
    bad = record(7, ["images/0.png", str(outside)])
    write_jsonl(data / "records.jsonl", [*recs, bad])
    assert len(load_images(data, recs[0])) == 1
    readers = {
        "generation": lambda: load_images(data, bad),
        "gallery": lambda: render_gallery([bad], {}, data),
        "review": lambda: _select_records([bad], {"r7": "x"}, str(data), None, 0),
        "easyr1 export": lambda: export(data, tmp_path / "easyr1", progress=False),
        "grpo": lambda: prompt_tokens(bad, processor=NoTemplate(), dataset_dir=data),
    }
    for name, read in readers.items():
        with pytest.raises((ImagePathError, StudyError), match="image outside the dataset folder") as e:
            read()
        assert f"{data} (id='r7')" in str(e.value), name
    assert not (tmp_path / "easyr1" / "train.parquet").exists()


# ---------------------------------------------------------------- bytes that are not UTF-8


def test_a_line_that_is_not_utf8_is_a_bad_row(tmp_path):
    data = tmp_path / "data"
    recs = make_dataset(data, 4)
    lines = (data / "records.jsonl").read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"Question 2?", b"Question \xff2?")  # e.g. a Latin-1 editor
    (data / "records.jsonl").write_bytes(b"".join(lines))

    with pytest.raises(BadRowsError, match=r"records.jsonl:3: not valid UTF-8 \(byte 0xff at column \d+\)"):
        load_checked_records(data, "train")
    good = load_checked_records(data, "train", skip_bad_rows=True)
    assert [r["id"] for r in good] == ["r0", "r1", "r3"]
    assert len(load_checked_records(data, "train", need_reasoning=True, skip_bad_rows=True)) == 3

    with pytest.raises(RecordError, match=r"records.jsonl:3: not valid UTF-8"):  # every other reader
        read_records(data)
    with pytest.raises(SystemExit, match=r"records.jsonl:3: not valid UTF-8 .* Fix or remove that line"):
        coldstart.main(["--data", str(data), "--out", str(tmp_path / "out"), "--teacher", "offline"])
    broken: list = []
    assert [n for n, _ in iter_jsonl(data / "records.jsonl", broken)] == [1, 2, 4]
    assert broken[0][0] == 3 and len(recs) == 4


# ---------------------------------------------------------------- duplicate ids


def test_duplicate_ids_are_bad_rows(tmp_path, caplog):
    data = tmp_path / "data"
    recs = make_dataset(data, 3)
    dup = {**record(5, "images/2.png"), "id": "r1"}  # another record under an id line 2 already holds
    other_split = {**record(6, "images/0.png", split="validation"), "id": "r0"}
    write_jsonl(data / "records.jsonl", [*recs, dup, other_split])

    with pytest.raises(BadRowsError) as stop:
        load_checked_records(data, "train")
    assert f"{data / 'records.jsonl'}:4 (id='r1'): duplicate id, first at line 2" in str(stop.value)

    with caplog.at_level(logging.WARNING, logger="data_prep.trl_dataset"):
        good = load_checked_records(data, "train", skip_bad_rows=True)
    assert [(r["id"], r["question"]) for r in good] == [(r["id"], r["question"]) for r in recs]
    assert "skipped 1 bad row(s)" in caplog.text and "{'duplicate id': 1}" in caplog.text
    with pytest.raises(BadRowsError, match=r"records.jsonl:5 \(id='r0'\): duplicate id, first at line 1"):
        load_checked_records(data, "validation")
