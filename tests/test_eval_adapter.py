"""The benchmark adapter on small xraybench-shaped files (JSONL, Parquet with embedded images, CSV)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from data_prep.frame import smart_resize
from data_prep.io import read_records
from evaluation.adapter import ConfigError, adapt, load_config, main

CONFIG = Path(__file__).resolve().parents[1] / "evaluation" / "adapters" / "xraybench.yaml"


def png(path: Path, size=(600, 500)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, 90).save(path)
    return path


def png_bytes(size=(300, 280)) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, 120).save(buf, format="PNG")
    return buf.getvalue()


ROWS = [
    {
        "id": "q1",
        "question": "Is there a pleural effusion?",
        "answer": "yes",
        "image": "imgs/a.png",
        "type": "VQA",
        "dataset": "MIMIC-CXR",
        "question_type": "presence",
        "subject_id": "10000032",
    },
    {
        "id": "q2",
        "question": "Describe the findings.",
        "answer": "The lungs are clear.",
        "image": "imgs/a.png",
        "type": "mimic_findings",
        "dataset": "mimic",
    },
    {
        "id": "q3",
        "question": "Write the impression.",
        "answer": "No acute process.",
        "image": ["imgs/b.png", "imgs/a.png"],
        "type": "openi_impression",
        "dataset": "OpenI",
    },
    {
        "id": "q4",
        "question": "Which abnormalities?",
        "answer": ["edema", "effusion"],
        "image": "imgs/b.png",
        "type": "ext-vqa",
        "dataset": "ext_vqa",
        "question_type": "abnormality",
    },
    # rejects
    {"id": "q5", "question": "What?", "answer": "", "image": "imgs/a.png", "type": "vqa"},
    {"id": "q6", "question": "What?", "answer": "x", "image": "imgs/a.png", "type": "grading"},
    {"id": "q7", "question": "What?", "answer": "x", "image": "imgs/missing.png", "type": "vqa"},
    {"id": "q1", "question": "dup", "answer": "no", "image": "imgs/a.png", "type": "vqa"},
    {"id": "q8", "question": "What?", "answer": "x", "image": "imgs/broken.png", "type": "vqa"},
]


@pytest.fixture()
def bench(tmp_path):
    root = tmp_path / "xraybench"
    png(root / "imgs" / "a.png")
    png(root / "imgs" / "b.png", size=(1000, 1200))
    (root / "imgs" / "broken.png").write_bytes(b"not an image")
    path = root / "test.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    return path


def test_unreadable_jsonl_lines_are_rejects_with_their_line(bench, tmp_path):
    # a byte that is not UTF-8 and a line cut mid-write: each a reject naming its line, the rest imported
    good = bench.read_bytes()
    bench.write_bytes(good + b'{"id": "q9", "question": "Is there \xff effusion?"}\n{"id": "q10", "quest\n')
    ledger = adapt(CONFIG, bench, tmp_path / "out", progress=False)
    assert ledger["read"] == 11 and ledger["written"] == 4
    assert ledger["rejected_by_reason"]["not valid UTF-8"] == 1
    assert ledger["rejected_by_reason"]["not valid JSON"] == 1
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert {r["where"] for r in rejects if r["reason"].startswith("not valid")} == {
        "test.jsonl:10",
        "test.jsonl:11",
    }


def test_xraybench_jsonl(bench, tmp_path):
    out = tmp_path / "out"
    ledger = adapt(CONFIG, bench, out, progress=False)
    assert ledger["read"] == 9 and ledger["written"] == 4 and ledger["rejected"] == 5
    assert ledger["rejected_by_reason"] == {
        "missing answer": 1,
        "unknown task": 1,
        "missing image": 1,
        "duplicate id": 1,
        "unreadable image": 1,
    }
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert {r["where"] for r in rejects} == {f"test.jsonl:row {i}" for i in (5, 6, 7, 8, 9)}
    assert all(r["detail"] for r in rejects)

    recs = {r["id"]: r for r in read_records(out)}  # validated against the schema
    assert [recs[i]["task"] for i in ("q1", "q2", "q3", "q4")] == [
        "vqa",
        "report_findings",
        "report_impression",
        "vqa",
    ]
    assert [recs[i]["source"] for i in ("q1", "q2", "q3", "q4")] == [
        "mimic-cxr",
        "mimic-cxr",
        "iu-xray",
        "medical-diff-vqa",
    ]
    assert recs["q1"]["meta"]["question_type"] == "presence" and recs["q1"]["patient_id"] == "10000032"
    assert recs["q2"]["patient_id"] == "q2"  # no patient column: the row id
    assert recs["q4"]["answer"] == "edema | effusion"
    # a two-image row keeps both images, in order, each converted into the frame; boxes lie on the first
    assert len(set(recs["q3"]["image"])) == 2 and all(i.startswith("images/") for i in recs["q3"]["image"])
    assert [list(Image.open(out / i).size) for i in recs["q3"]["image"]] == recs["q3"]["meta"]["image_sizes"]
    assert (recs["q3"]["width"], recs["q3"]["height"]) == tuple(recs["q3"]["meta"]["image_sizes"][0])
    assert all(r["split"] == "test" for r in recs.values())
    # images converted into the paper frame (max 512 x 512) once, sizes recorded
    h, w = smart_resize(500, 600, 3136, 262144)
    assert (recs["q1"]["width"], recs["q1"]["height"]) == (w, h)
    with Image.open(out / recs["q1"]["image"]) as im:
        assert im.size == (w, h)
    assert recs["q3"]["meta"]["original_size"] == [1000, 1200]
    assert json.loads((out / "frame.json").read_text())["max_pixels"] == 262144


def test_parquet_with_embedded_images_and_no_frame(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "question_id": "a",
            "query": "Is there edema?",
            "gt_answer": "no",
            "image": {"bytes": png_bytes(), "path": "x.png"},
            "task": "vqa",
        },
        {
            "question_id": "b",
            "query": "Findings?",
            "gt_answer": "Clear lungs.",
            "image": {"bytes": None, "path": None},
            "task": "findings",
        },
    ]
    path = tmp_path / "bench.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    cfg = load_config(CONFIG)
    cfg["frame"] = None
    out = tmp_path / "out"
    ledger = adapt(cfg, path, out, progress=False)
    assert ledger["written"] == 1 and ledger["rejected_by_reason"] == {"bad image value": 1}
    (rec,) = read_records(out)
    assert (rec["width"], rec["height"]) == (300, 280)  # original size kept
    assert (out / rec["image"]).exists() and not Path(rec["image"]).is_absolute()
    assert not (out / "frame.json").exists()


def test_csv_constant_task_and_cli(tmp_path, caplog):
    root = tmp_path / "bench"
    png(root / "img.png", size=(224, 224))
    (root / "rows.csv").write_text("question,answer,image\nWhat is seen?,normal chest,img.png\n,x,img.png\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "name: mini\ncolumns: {question: question, answer: answer, image: image}\n"
        "task: {constant: report_impression}\nframe: {min_pixels: 3136, max_pixels: 50176}\n"
    )
    main(["--config", str(cfg), "--input", str(root / "rows.csv"), "--out", str(tmp_path / "o")])
    assert "read 2, written 1, rejected 1" in caplog.text  # the ledger's summary
    (rec,) = read_records(tmp_path / "o")
    assert rec["id"] == "mini-000001" and rec["task"] == "report_impression" and rec["source"] == "mini"


def test_bad_configs(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("columns: {question: q, answer: a, image: i}\ntask: {constant: captioning}\n")
    with pytest.raises(ConfigError, match="unknown task 'captioning'"):
        load_config(bad)
    bad.write_text("columns: {question: q, answer: a}\ntask: {constant: vqa}\n")
    with pytest.raises(ConfigError, match="columns.image is required"):
        load_config(bad)
    bad.write_text("columns: {question: q, answer: a, image: i, colour: c}\ntask: {constant: vqa}\n")
    with pytest.raises(ConfigError, match="unknown field"):
        load_config(bad)


def test_no_frame_keeps_original_files_readable_through_image_roots(tmp_path, monkeypatch):
    """frame: null keeps the benchmark's own files, outside OUT: OUT/frame.json lists their folder as an
    image root (and no frame), so the confined resolver (data_prep.io.resolve_image) reads them."""
    from data_prep.frame import read_frame
    from data_prep.io import IMAGE_ROOTS_ENV, image_paths

    monkeypatch.delenv(IMAGE_ROOTS_ENV, raising=False)
    root = tmp_path / "bench"
    png(root / "imgs" / "a.png", size=(224, 224))
    (root / "rows.csv").write_text("question,answer,image\nWhat is seen?,normal chest,imgs/a.png\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "name: mini\ncolumns: {question: question, answer: answer, image: image}\n"
        "task: {constant: report_impression}\nframe: null\n"
    )
    out = tmp_path / "out"
    adapt(load_config(cfg), root / "rows.csv", out, progress=False)
    (rec,) = read_records(out)
    assert Path(rec["image"]).is_absolute()
    assert json.loads((out / "frame.json").read_text()) == {"image_roots": [str(root.resolve())]}
    assert read_frame(out) is None  # roots only: still no frame, the processor resizes at run time
    assert image_paths(out, rec) == [(root / "imgs" / "a.png").resolve()]


def test_one_placeholder_for_two_views_images_first_for_the_benchmark_strict_for_training(tmp_path):
    """A multi-view study in the paper's prompt shape: one leading <image>, two images. The benchmark
    adapter (placeholder_policy: images_first) keeps it with both views in order, counted; the EasyR1
    training import (strict) rejects it, counted, because a trained model must see each image where
    its text puts it."""
    from data_prep.converters import easyr1

    root = tmp_path / "bench"
    png(root / "imgs" / "frontal.png", size=(600, 500))
    png(root / "imgs" / "lateral.png", size=(500, 600))
    row = {"id": "s1", "problem": "<image>\nDescribe the findings of the provided image(s).",
           "images": ["imgs/frontal.png", "imgs/lateral.png"], "answer": "No acute process."}  # fmt: skip
    path = root / "test.jsonl"
    path.write_text(json.dumps(row) + "\n")

    ledger = adapt(CONFIG, path, tmp_path / "bench-out", progress=False)
    assert ledger["written"] == 1 and ledger["images_at_one_placeholder"] == 1
    (rec,) = read_records(tmp_path / "bench-out")
    assert rec["question"] == "Describe the findings of the provided image(s)."  # images first
    assert rec["meta"]["original_size"] == [600, 500]  # the frontal view leads, the lateral follows
    assert [list(Image.open(tmp_path / "bench-out" / i).size) for i in rec["image"]] == rec["meta"][
        "image_sizes"
    ]
    assert rec["meta"]["image_sizes"][0][0] > rec["meta"]["image_sizes"][0][1]  # landscape frontal first
    assert rec["meta"]["image_sizes"][1][0] < rec["meta"]["image_sizes"][1][1]

    ledger = easyr1.import_file(path, tmp_path / "train-out", split="train", progress=False)
    assert ledger["written"] == 0 and ledger["rejected_by_reason"] == {"image placeholders": 1}
    (reject,) = map(json.loads, (tmp_path / "train-out" / "rejects.jsonl").read_text().splitlines())
    assert "1 <image> placeholder(s) for 2 image(s)" in reject["detail"]
    assert "images_at_one_placeholder" not in ledger


def test_placeholder_policy_is_checked(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        CONFIG.read_text().replace("placeholder_policy: images_first", "placeholder_policy: loose")
    )
    with pytest.raises(ConfigError, match="placeholder_policy 'loose' is not one of strict, images_first"):
        load_config(cfg)
