"""Study creation from two evaluation runs: checks on the input, randomisation, the database, export."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from data_prep.errors import OpenMedixError
from evaluation.review import db
from evaluation.review.__main__ import main
from evaluation.review.study import CRITERION_KEYS, StudyError, assign, create_study, export
from evaluation.runs import PREDICTIONS, RUN_CONFIG
from tests.review_fixtures import RUNS, assignments, cast, make_study, phantom, two_runs


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("review"))


def test_study_copies_what_reviewers_see_and_keeps_run_names_server_side(study):
    folder, runs, tokens = study
    with db.connect(db.study_db(folder)) as conn:
        items = db.items(conn)
        assert len(items) == 6
        assert {i["task"] for i in items} == {
            "report_findings",
            "report_impression",
            "vqa",
            "classification",
            "grounding",
        }  # --limit draws round-robin over tasks
        for i in items:
            texts = db.completions(conn, i["item_id"])
            assert set(texts) == set(RUNS)
            assert texts[RUNS[0]].startswith("<think> Looked carefully")
            assert len(i["item_id"]) == 16 and i["record_id"] not in i["item_id"]
        assert db.run_names(conn) == list(RUNS)
        assert db.meta(conn)["seed"] == 11
    manifest = json.loads((folder / "study.json").read_text())
    assert manifest["runs"] == {n: str(Path(d).resolve()) for n, d in runs.items()}
    assert manifest["n_items"] == 6 and manifest["show_truth"] is False
    text = (folder / "study.json").read_text()
    for token in tokens.values():
        assert len(token) >= 32  # 192 random bits, URL-safe
        assert token not in text  # the manifest may be shared; tokens stay in the database
    assert len(set(tokens.values())) == 2


def test_sides_and_order_come_from_the_recorded_seed(study):
    folder, _, _ = study
    for reviewer in ("alice", "bob"):
        rows = assignments(folder, reviewer)
        expected = assign(6, f"11:{reviewer}")
        assert [(r["idx"], r["run_a"] == RUNS[0]) for r in rows] == expected
        assert {r["run_a"] for r in rows} == set(RUNS)  # the A/B mapping differs across records
        assert all({r["run_a"], r["run_b"]} == set(RUNS) for r in rows)
    alice, bob = assignments(folder, "alice"), assignments(folder, "bob")
    assert [(r["idx"], r["run_a"]) for r in alice] != [(r["idx"], r["run_a"]) for r in bob]


def test_assign_is_balanced_and_seeded():
    for n in (1, 2, 7, 40):
        pairs = assign(n, "5:alice")
        assert sorted(i for i, _ in pairs) == list(range(n))
        assert abs(2 * sum(first for _, first in pairs) - n) <= 1  # half the items each way (+-1)
        assert assign(n, "5:alice") == pairs
    assert assign(40, "5:alice") != assign(40, "5:bob") != assign(40, "6:alice")


def _runs_copy(tmp_path):
    data = phantom(tmp_path)
    return data, two_runs(tmp_path, data)


def test_runs_over_different_records_are_refused_naming_the_file(tmp_path):
    data, runs = _runs_copy(tmp_path)
    # b lacks two predictions
    pred = tmp_path / "eval" / RUNS[1] / PREDICTIONS
    lines = pred.read_text().splitlines()
    pred.write_text("\n".join(lines[2:]) + "\n")
    with pytest.raises(StudyError, match=rf"{RUNS[1]}/predictions.jsonl lacks predictions for 2 of the"):
        create_study(runs, tmp_path / "s1", ["alice"])
    # b answered another split
    pred.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "eval" / RUNS[1] / RUN_CONFIG
    cfg.write_text(cfg.read_text().replace('"split": "train"', '"split": "test"'))
    with pytest.raises(StudyError, match=r"run_config.json has split 'test'"):
        create_study(runs, tmp_path / "s2", ["alice"])
    # no run_config at all
    cfg.unlink()
    with pytest.raises(StudyError, match=rf"{RUNS[1]}/run_config.json not found"):
        create_study(runs, tmp_path / "s3", ["alice"])
    assert not (tmp_path / "s1" / "study.sqlite").exists()


def test_other_bad_input(tmp_path):
    data, runs = _runs_copy(tmp_path)
    with pytest.raises(StudyError, match="exactly two runs"):
        create_study({**runs, "third": runs[RUNS[0]]}, tmp_path / "s", ["alice"])
    with pytest.raises(StudyError, match="at least one reviewer"):
        create_study(runs, tmp_path / "s", [])
    with pytest.raises(StudyError, match="reviewer name"):
        create_study(runs, tmp_path / "s", ["al ice"])
    image = sorted((data / "images").iterdir())[0]
    shutil.move(image, tmp_path / "moved.png")
    with pytest.raises(StudyError, match=rf"image .*{image.name} of record .* not found"):
        create_study(runs, tmp_path / "s", ["alice"])
    shutil.move(tmp_path / "moved.png", image)
    create_study(runs, tmp_path / "s", ["alice"], limit=2)
    with pytest.raises(StudyError, match="already exists"):
        create_study(runs, tmp_path / "s", ["alice"])
    # predictions of ids the dataset does not hold
    for name in RUNS:
        with open(tmp_path / "eval" / name / PREDICTIONS, "a") as f:
            f.write(json.dumps({"id": "ghost-1", "completion": "x"}) + "\n")
    with pytest.raises(StudyError, match="1 predicted id.*ghost-1"):
        create_study(runs, tmp_path / "s4", ["alice"])


def test_cli_create_prints_links_and_links_add_reviewers(tmp_path, capsys):
    data, runs = _runs_copy(tmp_path)
    out = tmp_path / "study"
    main(["create", "--runs", *(f"{n}={d}" for n, d in runs.items()), "--out", str(out), "--reviewers", "ann,ben",
          "--limit", "3", "--seed", "4"])  # fmt: skip
    text = capsys.readouterr().out
    assert "3 items" in text and "seed 4" in text
    with db.connect(db.study_db(out)) as conn:
        tokens = {r["name"]: r["token"] for r in db.reviewers(conn)}
    assert f"http://127.0.0.1:8765/r/{tokens['ann']}" in text and tokens["ben"] in text
    main(["links", str(out), "--add", "cat"])
    text = capsys.readouterr().out
    assert "cat" in text and len(assignments(out, "cat")) == 3
    assert [(r["idx"], r["run_a"] == RUNS[0]) for r in assignments(out, "cat")] == assign(3, "4:cat")
    assert [r["name"] for r in json.loads((out / "study.json").read_text())["reviewers"]] == [
        "ann",
        "ben",
        "cat",
    ]
    with pytest.raises(SystemExit, match="^evaluation.review links: reviewer 'cat' is already in this study"):
        main(["links", str(out), "--add", "cat"])


def test_export_resolves_sides_to_runs(tmp_path):
    folder, _, _ = make_study(tmp_path, limit=3, reviewers=("alice",))
    a, b = RUNS
    cast(folder, "alice", {0: dict.fromkeys(CRITERION_KEYS, a), 1: dict.fromkeys(CRITERION_KEYS, "tie")})
    n = export(folder, tmp_path / "votes.csv")
    assert n == 2
    rows = list(csv.DictReader(open(tmp_path / "votes.csv")))
    by_winner = {r["grounded_preference_winner"]: r for r in rows}
    assert set(by_winner) == {a, "tie"}
    win = by_winner[a]
    assert win["grounded_preference"] == ("A" if win["run_a"] == a else "B")
    assert by_winner["tie"]["coherence"] == "tie"
    export(folder, tmp_path / "votes.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "votes.jsonl").read_text().splitlines()]
    assert [x["item_id"] for x in lines] == [r["item_id"] for r in rows]
    with pytest.raises(StudyError, match="writes .csv or .jsonl"):
        export(folder, tmp_path / "votes.txt")


def test_without_out_the_study_goes_under_the_out_root(tmp_path, capsys):
    """`make review` passes its OUT as --out_root: the study lands in OUT/review/NAME1-vs-NAME2."""
    _, runs = _runs_copy(tmp_path)
    main(["create", "--runs", *(f"{n}={d}" for n, d in runs.items()), "--out_root", str(tmp_path / "o"),
          "--reviewers", "ann", "--limit", "2"])  # fmt: skip
    assert db.study_db(tmp_path / "o" / "review" / "-vs-".join(runs)).exists()


def test_errors_are_project_errors_and_the_cli_exits_with_one_line(tmp_path):
    """Library code raises OpenMedixError subclasses (``except Exception`` sees them); only main exits."""
    assert issubclass(StudyError, OpenMedixError) and issubclass(StudyError, ValueError)
    assert not issubclass(StudyError, SystemExit)
    with pytest.raises(db.StudyNotFoundError, match="study.sqlite not found: create the study first"):
        with db.connect(db.study_db(tmp_path / "nothing")):
            pass
    with pytest.raises(SystemExit, match=r"^evaluation.review export: .*study.sqlite not found") as e:
        main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "v.csv")])
    assert "\n" not in str(e.value)


def test_start_creates_then_resumes_and_adds_reviewers(tmp_path, monkeypatch, caplog):
    """`make review` runs `start`: it creates the study once, then serves the same one again."""
    _, runs = _runs_copy(tmp_path)
    served = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: served.append(kw))
    out = tmp_path / "study"
    args = ["start", "--runs", *(f"{n}={d}" for n, d in runs.items()), "--out", str(out), "--limit", "2"]
    main(args)
    assert [r["name"] for r in json.loads((out / "study.json").read_text())["reviewers"]] == ["reviewer1"]
    before = (out / "study.sqlite").read_bytes()
    main([*args, "--reviewers", "reviewer1,dana"])
    assert "resuming study" in caplog.text and "added reviewer(s): dana" in caplog.text
    assert [r["name"] for r in json.loads((out / "study.json").read_text())["reviewers"]] == [
        "reviewer1",
        "dana",
    ]
    assert len(served) == 2 and served[0]["host"] == "127.0.0.1"
    assert before != (out / "study.sqlite").read_bytes()
    with pytest.raises(SystemExit, match="^evaluation.review start: .* compares"):
        swapped = dict(zip(runs, reversed(list(runs.values()))))  # the names on the other folders
        main(["start", "--runs", *(f"{n}={d}" for n, d in swapped.items()), "--out", str(out)])
