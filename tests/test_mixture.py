"""The mixture builder: selection, dedup, leak refusal, frame check, parquet round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from data_prep.frame import write_frame
from data_prep.io import read_records, write_jsonl
from data_prep.mixture import MixtureError, build, load_config, load_mixture, main, write
from data_prep.schema import validate_record

ROOT = Path(__file__).resolve().parent.parent


def make_source(
    folder: Path, source: str, patients: dict[str, str], per_patient: int = 3, max_pixels=50176, extra=()
):
    """A converter-like dataset folder: tiny PNGs, schema records (one grounding each), frame.json."""
    (folder / "images").mkdir(parents=True)
    recs = []
    for pid, split in patients.items():
        for k in range(per_patient):
            name = f"images/{pid}-{k}.png"
            Image.new("L", (56, 84), 50 + k).save(folder / name)
            recs.append(
                validate_record(
                    {
                        "id": f"{pid}-{k}",
                        "source": source,
                        "task": "grounding" if k == 0 else "vqa",
                        "question": f"Question {k} about {pid}?",
                        "answer": "[1, 2, 30, 40]" if k == 0 else "yes",
                        "boxes": [{"label": "nodule", "box": [1, 2, 30, 40]}] if k == 0 else [],
                        "image": name,
                        "width": 56,
                        "height": 84,
                        "patient_id": pid,
                        "study_id": f"{pid}-s",
                        "split": split,
                        "reasoning": f"Nodule at [1, 2, 30, 40] in {pid}." if k == 0 else None,
                        "meta": {"question_type": "grounding" if k == 0 else "presence", "k": k},
                    }
                )
            )
    recs += list(extra)
    write_jsonl(folder / "records.jsonl", recs)
    write_frame(folder, 3136, max_pixels)
    return folder


def config(tmp: Path, stages: dict, sources: dict, **kw) -> Path:
    import yaml

    path = tmp / "mix.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "seed": 3, "sources": sources, "stages": stages, **kw}))
    return path


@pytest.fixture
def two_sources(tmp_path):
    a = make_source(
        tmp_path / "a",
        "phantom",
        {f"P{i}": s for i, s in enumerate(["train"] * 6 + ["validation", "test", "test"])},
    )
    b = make_source(tmp_path / "b", "phantom-b", {"Q1": "train", "Q2": "test"})
    return tmp_path, {"a": str(a), "b": str(b)}


def test_build_write_and_load_round_trip(two_sources):
    tmp, sources = two_sources
    stages = {
        "sft": [
            {"source": "a", "splits": ["train", "validation"]},
            {"source": "b", "count": 2, "tasks": ["vqa"]},
        ],
        "rl": [{"source": "a", "fraction": 0.5, "question_types": ["presence"]}],
        "coldstart": [{"source": "a", "need_reasoning": True}],
        "test": [{"source": "a"}, {"source": "b"}],
    }
    cfg = load_config(config(tmp, stages, sources))
    staged, summary = build(cfg)
    assert len(staged["sft"]) == 7 * 3 + 2
    assert len(staged["rl"]) == 6  # half of the 12 presence records of the train patients
    assert all(r["reasoning"] for r in staged["coldstart"]) and len(staged["coldstart"]) == 6
    assert {r["split"] for r in staged["test"]} == {"test"} and len(staged["test"]) == 9
    assert summary["stages"]["sft"]["by_source_task_split"]["phantom | grounding | train"] == 6
    again, _ = build(cfg)
    assert [r["id"] for r in again["rl"]] == [r["id"] for r in staged["rl"]]  # seeded

    out = tmp / "mix"
    write(staged, summary, out, shard_rows=10)
    assert len(list((out / "data").glob("sft-*.parquet"))) == 3
    assert json.loads((out / "frame.json").read_text())["max_pixels"] == 50176
    loaded = load_mixture(out, "sft")
    assert len(loaded) == len(staged["sft"])
    by_id = {(r["source"], r["id"]): r for r in staged["sft"]}
    for rec in loaded:
        orig = by_id[(rec["source"], rec["id"])]
        assert rec == orig  # boxes / meta decoded, image absolute again
        assert Path(rec["image"]).exists()
    assert load_mixture(out, "test", split="test")[0]["split"] == "test"

    ds = pytest.importorskip("datasets")
    dd = ds.load_dataset(str(out))
    assert set(dd) == {"sft", "rl", "coldstart", "test"} and dd["sft"].num_rows == len(staged["sft"])
    row = dd["sft"][0]
    assert isinstance(row["boxes"], str) and isinstance(json.loads(row["meta"]), dict)


def test_duplicates_removed(two_sources, capsys):
    tmp, sources = two_sources
    dup = dict(json.loads((Path(sources["a"]) / "records.jsonl").read_text().splitlines()[1]))
    dup.update(id="copy-of-P0-1", source="phantom-c")  # same image, task, question, answer; other id
    make_source(tmp / "c", "phantom-c", {"P0": "train"}, per_patient=2, extra=[dup])
    sources["c"] = str(tmp / "c")
    stages = {"sft": [{"source": "a"}, {"source": "a"}, {"source": "c"}]}
    staged, summary = build(load_config(config(tmp, stages, sources)))
    # a listed twice: its 18 train records come once (same source and id); c's extra record
    # shows c's own P0-1.png with the same task, question and answer as c's P0-1: a duplicate.
    assert len(staged["sft"]) == 18 + 2
    assert summary["stages"]["sft"]["duplicates_removed"] == 18 + 1
    c_ids = {r["id"] for r in staged["sft"] if r["source"] == "phantom-c"}
    assert len(c_ids) == 2 and "P0-0" in c_ids and len(c_ids & {"P0-1", "copy-of-P0-1"}) == 1


def test_duplicate_content_across_ids_is_removed(tmp_path):
    extra_src = make_source(tmp_path / "a", "phantom", {"P0": "train"}, per_patient=2)
    lines = (extra_src / "records.jsonl").read_text().splitlines()
    twin = {**json.loads(lines[1]), "id": "P0-1-again", "question": "  QUESTION 1 about P0?  "}
    (extra_src / "records.jsonl").write_text("\n".join([*lines, json.dumps(twin)]) + "\n")
    staged, summary = build(load_config(config(tmp_path, {"sft": [{"source": "a"}]}, {"a": str(extra_src)})))
    assert len(staged["sft"]) == 2 and summary["stages"]["sft"]["duplicates_removed"] == 1


def test_leak_is_refused_with_patient_and_splits(tmp_path):
    a = make_source(tmp_path / "a", "mimic-cxr", {"10000032": "train", "10000040": "train"})
    b = make_source(tmp_path / "b", "ms-cxr", {"10000032": "test"})  # same MIMIC patient, other split
    stages = {"sft": [{"source": "a"}], "test": [{"source": "b"}]}
    with pytest.raises(MixtureError) as e:
        build(load_config(config(tmp_path, stages, {"a": str(a), "b": str(b)})))
    msg = str(e.value)
    assert "mimic:10000032" in msg and "train (sft/mimic-cxr)" in msg and "test (test/ms-cxr)" in msg
    assert "10000040" not in msg
    # the command line says the same on one line and exits non-zero, writing nothing
    with pytest.raises(SystemExit) as stop:
        main(["--config", str(tmp_path / "mix.yaml"), "--out", str(tmp_path / "out")])
    assert stop.value.code == f"data_prep.mixture: {msg}" and "\n" not in msg
    assert not (tmp_path / "out").exists()


def test_stage_split_rules(two_sources):
    tmp, sources = two_sources
    with pytest.raises(MixtureError, match="stage 'test' holds .* split 'train'"):
        build(load_config(config(tmp, {"test": [{"source": "a", "splits": ["train"]}]}, sources)))
    with pytest.raises(MixtureError, match="stage 'rl' holds .* split 'test'"):
        build(load_config(config(tmp, {"rl": [{"source": "a", "splits": ["test"]}]}, sources)))


def test_frames_must_match(tmp_path):
    a = make_source(tmp_path / "a", "phantom", {"P1": "train"})
    b = make_source(tmp_path / "b", "phantom-b", {"Q1": "train"}, max_pixels=262144)
    stages = {"sft": [{"source": "a"}, {"source": "b"}]}
    with pytest.raises(MixtureError, match="different frames"):
        build(load_config(config(tmp_path, stages, {"a": str(a), "b": str(b)})))
    with pytest.raises(MixtureError, match="asks for frame"):
        build(
            load_config(
                config(tmp_path, {"sft": [{"source": "a"}]}, {"a": str(a)}, frame={"max_pixels": 262144})
            )
        )


def test_config_errors(tmp_path):
    with pytest.raises(MixtureError, match="unknown stage 'pretrain'"):
        load_config(config(tmp_path, {"pretrain": [{"source": "a"}]}, {"a": "x"}))
    with pytest.raises(MixtureError, match="not listed under `sources:`"):
        load_config(config(tmp_path, {"sft": [{"source": "zzz"}]}, {"a": "x"}))
    with pytest.raises(MixtureError, match="unknown task"):
        load_config(config(tmp_path, {"sft": [{"source": "a", "tasks": ["caption"]}]}, {"a": "x"}))
    with pytest.raises(MixtureError, match="`count` or `fraction`"):
        load_config(config(tmp_path, {"sft": [{"source": "a", "count": 1, "fraction": 0.5}]}, {"a": "x"}))


def test_shipped_yamls_parse_and_phantom_yaml_builds(tmp_path, capsys):
    example = load_config(ROOT / "recipes/mixtures/example.yaml")
    assert set(example["stages"]) == {"sft", "coldstart", "rl", "test"}
    phantom = make_source(
        tmp_path / "phantom",
        "phantom",
        {f"P{i}": s for i, s in enumerate(["train"] * 8 + ["validation", "test"])},
    )
    out = tmp_path / "mix"
    main(
        [
            "--config",
            str(ROOT / "recipes/mixtures/phantom.yaml"),
            "--out",
            str(out),
            "--source",
            f"phantom={phantom}",
            "--jsonl",
        ]
    )
    printed = capsys.readouterr().out
    assert "sft: 27 records" in printed and "phantom | grounding | train" in printed
    dry = tmp_path / "dry"
    main(
        [
            "--config",
            str(ROOT / "recipes/mixtures/phantom.yaml"),
            "--out",
            str(dry),
            "--source",
            f"phantom={phantom}",
            "--dry_run",
        ]
    )
    assert "sft: 27 records" in capsys.readouterr().out and not dry.exists()  # counted, nothing written
    summary = json.loads((out / "mixture.json").read_text())
    assert summary["stages"]["test"]["records"] == 3
    recs = read_records(out / "sft")  # the --jsonl dataset folder the recipes can read
    assert len(recs) == 27 and all((out / "sft" / r["image"]).exists() for r in recs)
    assert (out / "sft" / "frame.json").exists()
    # rebuilding over an existing mixture folder replaces it; a foreign folder is refused
    main(
        [
            "--config",
            str(ROOT / "recipes/mixtures/phantom.yaml"),
            "--out",
            str(out),
            "--source",
            f"phantom={phantom}",
        ]
    )
    assert not (out / "sft").exists()
    with pytest.raises(SystemExit, match="^data_prep.mixture: .* exists and is not a mixture folder"):
        main(
            [
                "--config",
                str(ROOT / "recipes/mixtures/phantom.yaml"),
                "--out",
                str(phantom),
                "--source",
                f"phantom={phantom}",
            ]
        )
    assert (phantom / "records.jsonl").exists()


def test_mixture_images_outside_its_folder_load_through_recorded_image_roots(two_sources, monkeypatch):
    """Mixture records point into the source folders: the mixture lists them as image roots in every
    frame.json it writes, so the confined resolver (data_prep.io.resolve_image) still reads them."""
    from data_prep.converters.easyr1 import export
    from data_prep.io import IMAGE_ROOTS_ENV, image_paths
    from data_prep.trl_dataset import BadRowsError, load_checked_records

    monkeypatch.delenv(IMAGE_ROOTS_ENV, raising=False)
    tmp, sources = two_sources
    stages = {"sft": [{"source": "a"}, {"source": "b"}], "test": [{"source": "a"}]}
    staged, summary = build(load_config(config(tmp, stages, sources)))
    out = tmp / "mix"
    write(staged, summary, out, jsonl=True)
    roots = [str(Path(sources[n]).resolve()) for n in ("a", "b")]
    for folder in (out, out / "sft", out / "test"):
        assert json.loads((folder / "frame.json").read_text())["image_roots"] == roots

    good = load_checked_records(out / "sft", "train")  # the --jsonl folder a recipe trains on
    assert len(good) == len(staged["sft"]) == 21
    assert all(p.exists() for r in good for p in image_paths(out / "sft", r))
    assert all(p.exists() for r in load_mixture(out, "sft") for p in image_paths(out, r))
    assert export(out, tmp / "easyr1", stage="sft", progress=False) == {"train": 21}

    # a mixture (or cold-start set) as a source: its roots carry over, its frame still matches
    staged2, summary2 = build(load_config(config(tmp, {"sft": [{"source": "m"}]}, {"m": str(out / "sft")})))
    assert summary2["image_roots"] == [str((out / "sft").resolve()), *roots]
    write(staged2, summary2, tmp / "mix2", jsonl=True)
    assert len(load_checked_records(tmp / "mix2" / "sft", "train")) == len(good)

    # the roots are what lets them in
    frame = json.loads((out / "sft" / "frame.json").read_text())
    del frame["image_roots"]
    (out / "sft" / "frame.json").write_text(json.dumps(frame))
    with pytest.raises(BadRowsError, match="image outside the dataset folder"):
        load_checked_records(out / "sft", "train")
