"""A blind pairwise study from two evaluation runs over the same records.

``create_study`` checks that the runs answer the same records of the same dataset split, picks the
items (all records, or ``limit`` of them drawn round-robin over tasks), copies what a reviewer sees
into ``study.sqlite`` (one transaction, written to a temporary file, then renamed) and writes a
readable manifest ``study.json``. Each reviewer gets a link token and a seed; from the seed alone
come their item order and, per item, which run is shown as A (left) and which as B (right):
``assign(n, seed)``. Sides are balanced (half the items show each run on the left, +-1).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import secrets
import sqlite3
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from data_prep.errors import OpenMedixError
from data_prep.io import atomic_write_text, image_paths, read_records
from data_prep.schema import is_credentialed
from evaluation.gallery import sample_records
from evaluation.review import db
from evaluation.runs import PREDICTIONS, RUN_CONFIG, load_predictions

MANIFEST = "study.json"


@dataclass(frozen=True)
class Criterion:
    key: str
    label: str
    question: str


# The paper's criterion first, then the rubric. Reviewers, the judge and the analysis read this list.
CRITERIA = (
    Criterion(
        "grounded_preference",
        "Grounded preference",
        "Overall, which reasoning do you prefer: the one whose statements are better supported by "
        "the regions it cites in the image?",
    ),
    Criterion(
        "clinical_correctness",
        "Clinical correctness",
        "Which gets the findings and the final answer right for this image?",
    ),
    Criterion(
        "visual_grounding",
        "Visual grounding",
        "Whose cited boxes lie on the structures or findings their sentences name, "
        "with fewer missing or spurious boxes?",
    ),
    Criterion(
        "coherence",
        "Coherence",
        "Whose reasoning leads to its answer logically, without contradiction or repetition?",
    ),
)
CRITERION_KEYS = [c.key for c in CRITERIA]
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class StudyError(OpenMedixError, ValueError):
    """Bad input to a study: the message names the file and the reason."""


# ----------------------------------------------------------------------------- randomisation


def assign(n_items: int, seed: str) -> list[tuple[int, bool]]:
    """(item index, first run shown as A) in presentation order, from the seed alone.

    The order is a seeded shuffle; the sides are a seeded shuffle of a balanced list, so each run
    is on the left for half the items (the extra one of an odd count goes either way).
    """
    rng = random.Random(seed)
    order = list(range(n_items))
    rng.shuffle(order)
    first_left = [i % 2 == 0 for i in range(n_items)]
    rng.shuffle(first_left)
    return list(zip(order, first_left))


def reviewer_seed(study_seed: int, name: str) -> str:
    return f"{study_seed}:{name}"


# ----------------------------------------------------------------------------- loading runs


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_run_dir(name: str, folder: str | Path) -> dict:
    """run_config.json and predictions of an evaluation.run folder, or a StudyError saying what is wrong."""
    folder = Path(folder)
    config_path, pred_path = folder / RUN_CONFIG, folder / PREDICTIONS
    for p in (config_path, pred_path):
        if not p.exists():
            raise StudyError(
                f"run '{name}': {p} not found (an evaluation run folder, written by "
                f"`python -m evaluation.run ... --out {folder}`, holds {RUN_CONFIG} and {PREDICTIONS})"
            )
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise StudyError(f"run '{name}': {config_path} is not valid JSON ({e.msg})") from None
    for key in ("data", "split"):
        if not config.get(key):
            raise StudyError(f"run '{name}': {config_path} has no '{key}' (which dataset the run answered)")
    preds = load_predictions(pred_path)
    if not preds:
        raise StudyError(f"run '{name}': {pred_path} holds no predictions")
    return {
        "name": name,
        "dir": str(folder.resolve()),
        "config": config,
        "predictions": preds,
        "predictions_sha256": _file_sha256(pred_path),
    }


def _ids_note(ids) -> str:
    ids = sorted(ids)
    return ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")


def check_runs(a: dict, b: dict) -> None:
    """The two runs must answer the same records of the same dataset split."""
    ca, cb = a["config"], b["config"]
    for key in ("data", "split"):
        va, vb = ca[key], cb[key]
        if key == "data":
            va, vb = str(Path(va).resolve()), str(Path(vb).resolve())
        if va != vb:
            raise StudyError(
                f"the runs answered different records: {Path(a['dir']) / RUN_CONFIG} has {key} {va!r}, "
                f"{Path(b['dir']) / RUN_CONFIG} has {key} {vb!r}"
            )
    ids_a, ids_b = set(a["predictions"]), set(b["predictions"])
    for this, other, missing in ((a, b, ids_a - ids_b), (b, a, ids_b - ids_a)):
        if missing:
            raise StudyError(
                f"{Path(other['dir']) / PREDICTIONS} lacks predictions for {len(missing)} of the "
                f"{len(this['predictions'])} records in {Path(this['dir']) / PREDICTIONS} "
                f"({_ids_note(missing)}): both runs must answer the same records (finish the shorter "
                "run, or evaluate both with the same --limit)"
            )
    for run in (a, b):
        empty = [rid for rid, text in run["predictions"].items() if not (text or "").strip()]
        if len(empty) == len(run["predictions"]):
            raise StudyError(f"{Path(run['dir']) / PREDICTIONS}: every prediction is empty")


# ----------------------------------------------------------------------------- creating a study


def _new_token(taken: set[str]) -> str:
    while (token := secrets.token_urlsafe(24)) in taken:  # 192 bits: unguessable
        pass
    return token


def add_reviewers(conn: sqlite3.Connection, names: list[str]) -> list[tuple[str, str]]:
    """New reviewers with their tokens and assignments (inside the caller's transaction)."""
    study_seed = db.meta(conn)["seed"]
    items = db.items(conn)
    runs = db.run_names(conn)
    existing = {r["name"] for r in db.reviewers(conn)}
    tokens = {r["token"] for r in db.reviewers(conn)}
    out = []
    for name in names:
        if not NAME_RE.match(name):
            raise StudyError(f"reviewer name {name!r}: use letters, digits, '_', '.', '-' (at most 64)")
        if name in existing:
            raise StudyError(f"reviewer '{name}' is already in this study (`links` prints their link)")
        existing.add(name)
        token = _new_token(tokens)
        tokens.add(token)
        seed = reviewer_seed(study_seed, name)
        cur = conn.execute(
            "INSERT INTO reviewers (name, token, seed, created_at) VALUES (?, ?, ?, ?)",
            (name, token, seed, db.now()),
        )
        rid = cur.lastrowid
        for position, (idx, first_left) in enumerate(assign(len(items), seed)):
            a, b = (runs[0], runs[1]) if first_left else (runs[1], runs[0])
            conn.execute(
                "INSERT INTO assignments (reviewer_id, position, item_id, run_a, run_b) VALUES (?, ?, ?, ?, ?)",
                (rid, position, items[idx]["item_id"], a, b),
            )
        out.append((name, token))
    return out


def _select_records(records: list[dict], preds: dict, data_dir: str, limit: int | None, seed: int) -> list:
    by_id = {r["id"]: r for r in records}
    unknown = set(preds) - set(by_id)
    if unknown:
        raise StudyError(
            f"{len(unknown)} predicted id(s) are not records of {data_dir} ({_ids_note(unknown)}): "
            "the runs' run_config.json names another dataset or split"
        )
    chosen = [r for r in records if r["id"] in preds]  # dataset order
    if limit is not None and limit < len(chosen):
        keep = {r["id"] for r in sample_records(chosen, limit, seed)}
        chosen = [r for r in chosen if r["id"] in keep]
    for rec in chosen:
        for p in image_paths(data_dir, rec):
            if not p.exists():
                raise StudyError(f"{data_dir}: image {p} of record {rec['id']!r} not found")
    return chosen


def _check_request(runs: dict[str, str], out: Path, reviewers: list[str]) -> None:
    if len(runs) != 2:
        raise StudyError(f"a pairwise study compares exactly two runs, got {len(runs)}: {', '.join(runs)}")
    for name in runs:
        if not NAME_RE.match(name) or name == "tie":
            raise StudyError(f"run name {name!r}: use letters, digits, '_', '.', '-' (at most 64), not 'tie'")
    if not reviewers:
        raise StudyError("name at least one reviewer (--reviewers alice,bob)")
    if db.study_db(out).exists():
        raise StudyError(f"{db.study_db(out)} already exists: use another --out (or `serve` it)")


def _settings(chosen: list[dict], data_dir: str, split: str, seed: int, show_truth: bool) -> dict:
    """The study's meta table: how it was drawn and what it shows."""
    sources = Counter(r["source"] for r in chosen)
    return {
        "created": db.now(),
        "seed": seed,
        "show_truth": show_truth,
        "criteria": CRITERION_KEYS,
        "data": str(Path(data_dir).resolve()),
        "split": split,
        "n_items": len(chosen),
        "tasks": dict(Counter(r["task"] for r in chosen)),
        "sources": dict(sources),
        "credentialed": {s: n for s, n in sources.items() if is_credentialed(s)},
    }


def _insert_items(
    conn: sqlite3.Connection, chosen: list[dict], pair: tuple[dict, dict], data_dir: str
) -> None:
    """One item per record, under an opaque id, with both runs' completions."""
    taken: set[str] = set()
    for idx, rec in enumerate(chosen):
        item_id = secrets.token_hex(8)  # opaque: says nothing of record, run or order
        while item_id in taken:
            item_id = secrets.token_hex(8)
        taken.add(item_id)
        conn.execute(
            "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                item_id,
                idx,
                rec["id"],
                rec["task"],
                rec["source"],
                rec["question"],
                rec["answer"],
                json.dumps(rec["boxes"]),
                rec["width"],
                rec["height"],
                json.dumps([str(p.resolve()) for p in image_paths(data_dir, rec)]),
            ),
        )
        for run in pair:
            conn.execute(
                "INSERT INTO completions (item_id, run, text) VALUES (?, ?, ?)",
                (item_id, run["name"], run["predictions"][rec["id"]]),
            )


def _write_db(
    out: Path,
    settings: dict,
    pair: tuple[dict, dict],
    chosen: list[dict],
    data_dir: str,
    reviewers: list[str],
) -> list[tuple[str, str]]:
    """study.sqlite in one transaction, written to a temporary file and renamed: a study exists
    whole or not at all. Returns [(reviewer, token)]."""
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".study.", suffix=".sqlite.tmp")
    os.close(fd)
    try:
        with db.connect(tmp, create=True) as conn:
            conn.executescript(db.schema(CRITERION_KEYS))
            with conn:
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [(k, json.dumps(v)) for k, v in settings.items()],
                )
                for pos, run in enumerate(pair):
                    conn.execute(
                        "INSERT INTO runs (position, name, dir) VALUES (?, ?, ?)",
                        (pos, run["name"], run["dir"]),
                    )
                _insert_items(conn, chosen, pair, data_dir)
                links = add_reviewers(conn, reviewers)
        os.chmod(tmp, 0o600)  # it holds the reviewers' tokens
        os.replace(tmp, db.study_db(out))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return links


def create_study(
    runs: dict[str, str],
    out: str | Path,
    reviewers: list[str],
    limit: int | None = None,
    seed: int | None = None,
    show_truth: bool = False,
) -> tuple[Path, list[tuple[str, str]]]:
    """Write OUT/study.sqlite and OUT/study.json; returns (study folder, [(reviewer, token)])."""
    out = Path(out)
    _check_request(runs, out, reviewers)
    a, b = (load_run_dir(name, folder) for name, folder in runs.items())
    check_runs(a, b)
    data_dir, split = a["config"]["data"], a["config"]["split"]
    if not Path(data_dir).exists():
        raise StudyError(f"{Path(a['dir']) / RUN_CONFIG}: its dataset {data_dir} is not found")
    seed = secrets.randbits(31) if seed is None else seed
    records = read_records(data_dir, split=split)
    chosen = _select_records(records, a["predictions"], data_dir, limit, seed)
    if not chosen:
        raise StudyError(f"no records to review in {data_dir} (split {split})")
    settings = _settings(chosen, data_dir, split, seed, show_truth)
    links = _write_db(out, settings, (a, b), chosen, data_dir, reviewers)
    write_manifest(out)
    return out, links


def write_manifest(study: str | Path) -> dict:
    """study.json: what the study compares and how it was drawn (no tokens: it may be shared)."""
    study = Path(study)
    with db.connect(db.study_db(study)) as conn:
        manifest = {
            **db.meta(conn),
            "runs": {r["name"]: r["dir"] for r in conn.execute("SELECT * FROM runs ORDER BY position")},
            "reviewers": [
                {"name": r["name"], "seed": r["seed"], "created_at": r["created_at"]}
                for r in db.reviewers(conn)
            ],
            "assignment": "per reviewer: evaluation.review.study.assign(n_items, seed) -> "
            "(item index, first run shown as A) in presentation order",
        }
    atomic_write_text(study / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def check_same_runs(study: str | Path, runs: dict[str, str]) -> None:
    """A study reopened with --runs must be the one made from these runs."""
    with db.connect(db.study_db(study)) as conn:
        have = {r["name"]: r["dir"] for r in conn.execute("SELECT * FROM runs")}
    want = {name: str(Path(d).resolve()) for name, d in runs.items()}
    if have != want:
        raise StudyError(
            f"{db.study_db(study)} compares {have}, not {want}: use another --out for another pair of runs"
        )


# ----------------------------------------------------------------------------- export


def vote_rows(study: str | Path) -> list[dict]:
    """Every vote, one row per reviewer and item: the sides' runs, each criterion as shown and resolved."""
    with db.connect(db.study_db(study)) as conn:
        rows = db.votes(conn)
    out = []
    for v in rows:
        row = {
            "reviewer": v["reviewer"],
            "record_id": v["record_id"],
            "item_id": v["item_id"],
            "task": v["task"],
            "source": v["source"],
            "position": v["position"] + 1,
            "run_a": v["run_a"],
            "run_b": v["run_b"],
        }
        for key in CRITERION_KEYS:
            row[key] = v[key]
            row[f"{key}_winner"] = resolve(v[key], v["run_a"], v["run_b"])
        row.update(
            comment=v["comment"], elapsed_ms=v["elapsed_ms"], voted_at=v["voted_at"], revisions=v["revisions"]
        )
        out.append(row)
    return out


def resolve(choice: str | None, run_a: str, run_b: str) -> str | None:
    """A shown choice as a run name ('tie' stays 'tie'; None stays None)."""
    return {"A": run_a, "B": run_b, "tie": "tie"}.get(choice) if choice else None


def export(study: str | Path, path: str | Path) -> int:
    """Votes to a .csv or .jsonl file (by its suffix); returns the number of rows."""
    import csv
    import io

    rows, path = vote_rows(study), Path(path)
    if path.suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    elif path.suffix == ".csv":
        buf = io.StringIO()
        fields = list(rows[0]) if rows else ["reviewer", "record_id", "item_id"]
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buf.getvalue()
    else:
        raise StudyError(f"{path}: export writes .csv or .jsonl")
    atomic_write_text(path, text)
    return len(rows)
