"""EasyR1/verl data both ways, the xraybench sample in EasyR1 layout, and broken JSON lines as bad rows."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from data_prep import mixture
from data_prep.converters import easyr1
from data_prep.converters.adapter import adapt
from data_prep.images import convert_image
from data_prep.io import read_records
from data_prep.prompts import REASONING_INSTRUCTION, build_prompt, question_text, user_content
from data_prep.schema import IMAGE_TOKEN, is_credentialed, record_images
from data_prep.trl_dataset import BadRowsError, load_checked_records
from rewards import paper
from tests.conftest import ROOT, run_in_process, run_module

XRAYBENCH = ROOT / "evaluation" / "adapters" / "xraybench.yaml"


@pytest.fixture(scope="module")
def phantom_mixture(phantom_dir, tmp_path_factory) -> Path:
    cfg = mixture.load_config(ROOT / "recipes" / "mixtures" / "phantom.yaml", {"phantom": str(phantom_dir)})
    stages, summary = mixture.build(cfg)
    out = tmp_path_factory.mktemp("mix") / "phantom"
    mixture.write(stages, summary, out)
    return out


def test_round_trip_mixture_stage_export_import(phantom_mixture, tmp_path):
    exported = tmp_path / "easyr1"
    counts = easyr1.export(phantom_mixture, exported, stage="rl", progress=False)
    assert set(counts) == {"train"} and counts["train"] > 50
    assert (exported / "format_prompt.jinja").exists() and (exported / "frame.json").exists()

    frame = json.loads((exported / "frame.json").read_text())
    imported = tmp_path / "imported"
    ledger = easyr1.import_file(exported / "train.parquet", imported, frame=frame, progress=False)
    assert ledger["written"] == counts["train"] and ledger["rejected"] == 0

    original = {r["id"]: r for r in mixture.load_mixture(phantom_mixture, "rl")}
    back = {r["id"]: r for r in read_records(imported)}
    assert back.keys() == original.keys()
    for rid, rec in back.items():
        orig = original[rid]
        for key in ("task", "question", "answer", "boxes", "source", "split", "patient_id", "study_id"):
            assert rec[key] == orig[key], (rid, key)
        assert (rec["width"], rec["height"]) == (orig["width"], orig["height"])
    # each distinct image stored once (named by its content), though every row carried its own bytes
    stored = {p.name for p in (imported / "images").iterdir()}
    assert len(stored) == len({r["image"] for r in original.values()}) < len(original)
    assert {back[rid]["image"].split("/")[-1] for rid in back} == stored
    # images byte-equal after the frame conversion: the imported file is what converting the original gives
    for rid in list(back)[:10]:
        ref = tmp_path / "ref" / f"{rid}.png"
        convert_image(original[rid]["image"], ref, frame["min_pixels"], frame["max_pixels"])
        assert (imported / back[rid]["image"]).read_bytes() == ref.read_bytes()


def test_export_loads_with_datasets_and_scores_with_easyr1_signature(phantom_dir, tmp_path):
    from datasets import load_dataset

    out = tmp_path / "e"
    easyr1.export(phantom_dir, out, splits=["validation"], progress=False)
    ds = load_dataset("parquet", data_files={"validation": str(out / "validation.parquet")})["validation"]
    records = {r["id"]: r for r in read_records(phantom_dir, split="validation")}
    assert len(ds) == len(records)
    row = ds[0]
    assert set(row) >= {"images", "problem", "answer"}
    assert row["problem"].startswith(IMAGE_TOKEN) and row["problem"].count(IMAGE_TOKEN) == len(row["images"])
    with Image.open(io.BytesIO(row["images"][0]["bytes"])) as im:
        rec = records[row["id"]]
        assert im.size == (rec["width"], rec["height"])
    assert json.loads(row["boxes"]) == rec["boxes"]

    # EasyR1's format prompt renders our reasoning prompt around the problem
    import jinja2

    rendered = jinja2.Template((out / "format_prompt.jinja").read_text()).render(content=row["problem"])
    assert rendered.strip() == IMAGE_TOKEN + question_text(rec, reasoning=True)
    assert REASONING_INSTRUCTION in rendered

    # the paper reward through EasyR1's batch signature, on the exported rows
    rows = [ds[i] for i in range(min(len(ds), 40))]
    good = [f"<think> reading [1, 2, 30, 40] </think>. The answer is: \\boxed{{{r['answer']}}}" for r in rows]
    bad = ["The answer is " + r["answer"] for r in rows]
    inputs = [
        {"response": t, "response_length": len(t), "ground_truth": r["answer"]} for t, r in zip(good, rows)
    ]
    scores = paper.compute_score(inputs)
    assert all(s.keys() == {"overall", "format", "accuracy", "coordinate"} for s in scores)
    assert all(s["accuracy"] == 1.5 and s["format"] == 1.0 and s["coordinate"] == 0.05 for s in scores)
    assert all(s["overall"] == pytest.approx(0.9 * 1.5 + 0.1 + 0.05) for s in scores)
    worse = paper.compute_score([{"response": t, "ground_truth": r["answer"]} for t, r in zip(bad, rows)])
    assert all(s["format"] == 0.0 and s["coordinate"] == 0.0 for s in worse)
    for s, t, r in zip(scores, good, rows):
        assert s["overall"] == paper.score(t, r["answer"])["overall"]
    with pytest.raises(ValueError, match="reward_type=batch"):
        paper.compute_score(inputs[0])


def test_export_cli_names_the_stage_of_a_mixture(phantom_mixture, tmp_path):
    proc = run_module(
        "data_prep.converters.easyr1",
        "export",
        "--data",
        phantom_mixture,
        "--out",
        tmp_path / "x",
        check=False,
    )
    assert proc.returncode != 0 and "--stage" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- the xraybench sample, EasyR1 layout


def png_bytes(size, value=100) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, value).save(buf, format="PNG")
    return buf.getvalue()


SAMPLE = [  # (problem, answer, number of images, expected task)
    ("<image>\nGenerate the findings section of the radiology report for this chest X-ray.",
     "The lungs are clear. No pleural effusion.", 1, "report_findings"),
    ("<image>\nWrite the impression of the radiology report.", "No acute cardiopulmonary process.", 1,
     "report_impression"),
    ("<image>\nIs there a pleural effusion in this image?", "yes", 1, "vqa"),
    ("<image>\nWhich view is this chest X-ray taken in?", "PA", 1, "vqa"),
    ("<image>\nWhat abnormalities are seen in this image?", "edema|pleural effusion", 1, "vqa"),
    ("<image><image>\nGiven the frontal and lateral views, provide the findings of the report.",
     "Heart size is normal. Small left effusion.", 2, "report_findings"),
    ("<image>\nWhere is the pneumothorax located?", "left apical", 1, "vqa"),
]  # fmt: skip
REJECTED = [("<image>\nRate the technical quality of this radiograph from 1 to 5.", "4", 1)]


def write_sample(root: Path, embedded: bool) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (problem, answer, n, _) in enumerate(SAMPLE + [(*r, None) for r in REJECTED]):
        images = []
        for j in range(n):
            data = png_bytes((600 + 40 * j, 500), 60 + 30 * j)
            if embedded:
                images.append({"bytes": data, "path": f"s{k}_{j}.png"})
            else:
                (root / "imgs").mkdir(exist_ok=True)
                (root / "imgs" / f"s{k}_{j}.png").write_bytes(data)
                images.append(f"imgs/s{k}_{j}.png")
        rows.append({"images": images, "problem": problem, "answer": answer})
    if embedded:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = root / "test.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path = root / "test.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("embedded", [False, True], ids=["jsonl-paths", "parquet-bytes"])
def test_xraybench_easyr1_sample_maps_with_tasks_from_the_prompt(tmp_path, embedded):
    path = write_sample(tmp_path / "bench", embedded)
    out = tmp_path / "out"
    ledger = adapt(XRAYBENCH, path, out, progress=False)
    assert ledger["read"] == len(SAMPLE) + 1
    assert ledger["written"] == len(SAMPLE), ledger
    assert ledger["rejected_by_reason"] == {"unknown task": 1}

    recs = read_records(out)  # validated against the schema
    assert [r["task"] for r in recs] == [t for *_, t in SAMPLE]
    assert [len(record_images(r)) for r in recs] == [n for _, _, n, _ in SAMPLE]
    two = recs[5]
    assert all((out / i).exists() for i in two["image"]) and two["image"][0] != two["image"][1]
    assert all(IMAGE_TOKEN not in r["question"] for r in recs)  # leading placeholders become image items
    assert build_prompt(two, reasoning=False)[0]["content"][:2] == [{"type": "image"}, {"type": "image"}]
    assert recs[4]["answer"] == "edema|pleural effusion"
    assert all(is_credentialed(r["source"]) for r in recs)  # MIMIC-derived unless told otherwise
    assert all("task_value" not in r["meta"] and r["meta"]["task_rule"] for r in recs)

    rejects = (out / "rejects.jsonl").read_text().splitlines()
    assert len(rejects) == 1
    assert all(len(line.encode()) < 1024 for line in rejects)
    (rej,) = map(json.loads, rejects)
    assert "Rate the technical quality of this radiograph" in rej["detail"]
    if embedded:
        assert "bytes, sha256" in json.dumps(rej["row"]["images"])


def test_placeholders_inside_the_text_become_image_items_at_their_place():
    rec = {"question": "Compare the prior <image> with the current <image>. Any change?", "image": ["a", "b"]}
    content = build_prompt(rec, reasoning=False)[0]["content"]
    assert [c["type"] for c in content] == ["text", "image", "text", "image", "text"]
    assert all(IMAGE_TOKEN not in c.get("text", "") for c in content)
    with pytest.raises(ValueError, match="1 <image> placeholder"):
        user_content("one <image> only", 2)


# ---------------------------------------------------------------- broken JSON lines


def test_a_broken_json_line_is_a_bad_row(phantom_dir, tiny_dir, tmp_path):
    data = tmp_path / "torn"
    data.mkdir()
    (data / "images").symlink_to(phantom_dir / "images")  # leads out of the folder: allowed as a root
    frame = json.loads((phantom_dir / "frame.json").read_text())
    (data / "frame.json").write_text(json.dumps({**frame, "image_roots": [str(phantom_dir)]}))
    lines = (phantom_dir / "records.jsonl").read_text().splitlines()
    lines.insert(3, lines[3][: len(lines[3]) // 2])  # a writer killed mid-line
    (data / "records.jsonl").write_text("\n".join(lines) + "\n")

    with pytest.raises(BadRowsError, match=r"records.jsonl:4: not valid JSON") as e:
        load_checked_records(data, "train")
    assert "skip_bad_rows: true" in str(e.value)
    good = load_checked_records(data, "train", skip_bad_rows=True)
    assert len(good) == len(load_checked_records(phantom_dir, "train"))

    proc = run_in_process(
        "recipes.sft", "--config", "recipes/demo/sft.yaml", "--dataset_name", data, "--model_name_or_path", tiny_dir,
        "--output_dir", tmp_path / "o", "--max_steps", "1",
    )  # fmt: skip
    assert proc.returncode != 0
    assert "records.jsonl:4: not valid JSON" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_missing_model_folder_is_a_clear_error(phantom_dir, tmp_path):
    proc = run_in_process(
        "recipes.sft", "--config", "recipes/demo/sft.yaml", "--dataset_name", phantom_dir,
        "--model_name_or_path", tmp_path / "no-such-model", "--output_dir", tmp_path / "o",
    )  # fmt: skip
    assert proc.returncode != 0 and "cannot read the model config of" in proc.stderr
    assert "make tiny-model" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- stored image names

FRAME = {"min_pixels": 3136, "max_pixels": 56 * 56}


def write_rows(path: Path, values: dict[str, int]) -> Path:
    """An EasyR1 parquet with one embedded flat grey image per id (the grey level tells them apart)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"id": rid, "images": [{"bytes": png_bytes((56, 56), v), "path": "x.png"}], "problem": "Effusion?"}
        | {"answer": "yes"}
        for rid, v in values.items()
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def pixels(out: Path) -> dict[str, int]:
    """id -> the grey level of its stored image."""
    values = {}
    for rec in read_records(out):
        with Image.open(out / rec["image"]) as im:
            values[rec["id"]] = im.getpixel((28, 28))
    return values


def test_ids_that_differ_only_in_unsafe_characters_keep_their_own_images(tmp_path):
    """`case 1`, `case_1` and `case/1` all became images/case_1.png: three records, one picture."""
    src = write_rows(tmp_path / "train.parquet", {"case 1": 40, "case_1": 120, "case/1": 200, "same": 40})
    out = tmp_path / "imported"
    ledger = easyr1.import_file(src, out, frame=FRAME, progress=False)
    assert ledger["written"] == 4 and "reimport" not in ledger
    assert pixels(out) == {"case 1": 40, "case_1": 120, "case/1": 200, "same": 40}
    recs = {r["id"]: r for r in read_records(out)}
    assert recs["same"]["image"] == recs["case 1"]["image"]  # identical images are stored once
    assert len(list((out / "images").iterdir())) == 3 and not (out / "_staged").exists()


def test_a_reimport_stores_changed_images_and_says_so(tmp_path):
    out = tmp_path / "imported"
    easyr1.import_file(
        write_rows(tmp_path / "a.parquet", {"a": 40, "b": 120}), out, frame=FRAME, progress=False
    )
    old = {r["id"]: r["image"] for r in read_records(out)}
    ledger = easyr1.import_file(
        write_rows(tmp_path / "b.parquet", {"a": 40, "b": 220, "c": 90}), out, frame=FRAME, progress=False
    )
    assert pixels(out) == {"a": 40, "b": 220, "c": 90}  # the new pixels, not the stale file
    assert ledger["reimport"] == {
        "previous_records": 2,
        "images_replaced": 1,
        "records_added": 1,
        "records_dropped": 0,
        "stale_images_removed": 1,
    }
    assert not (out / old["b"]).exists() and (out / old["a"]).exists()
    assert json.loads((out / "ledger.json").read_text())["reimport"]["images_replaced"] == 1
    # a folder another tool wrote (a converter's dataset) is never tidied, whatever its records name
    other = tmp_path / "converted"
    (other / "images").mkdir(parents=True)
    (other / "images" / "x.png").write_bytes(png_bytes((56, 56)))
    (other / "records.jsonl").write_text(json.dumps({"id": "x", "image": "images/x.png"}) + "\n")
    (other / "ledger.json").write_text(json.dumps({"job": "mimic-cxr"}))
    ledger = easyr1.import_file(tmp_path / "b.parquet", other, frame=FRAME, progress=False)
    assert "reimport" not in ledger and (other / "images" / "x.png").exists()
