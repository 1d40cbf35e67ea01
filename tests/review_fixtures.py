"""Helpers for the review tests: a few phantom records, two evaluation runs over them in the format
evaluation.run writes (run_config.json + predictions.jsonl), a study, votes, a live server."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

from data_prep.io import append_jsonl, read_records
from data_prep.phantom import generate
from evaluation.review import db
from evaluation.review.study import create_study
from evaluation.runs import PREDICTIONS, RUN_CONFIG

SIZE = 112
RUNS = ("alpharun", "betarun")  # names that no completion, question or path contains
GOOD, POOR = "Looked carefully", "Quick look"  # how a page's panel shows which run it is
PNG = b"\x89PNG\r\n\x1a\n"


def phantom(root: Path, n_studies: int = 4, source: str | None = None) -> Path:
    """A phantom dataset folder (every record in the 'train' split); ``source`` relabels every record."""
    out = root / "dataset"
    generate(n_studies, out, seed=0, size=SIZE, progress=False)
    if source:
        path = out / "records.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        path.write_text("".join(json.dumps({**r, "source": source}) + "\n" for r in rows))
    return out


def completion(rec: dict, good: bool) -> str:
    """A completion in the paper's format: the good run cites the ground-truth box and answers right."""
    if good:
        box = rec["boxes"][0]["box"] if rec["boxes"] else [30, 40, 80, 90]
        lead, answer = GOOD, rec["answer"]
    else:
        box, lead, answer = [2, 2, 20, 20], POOR, "no"
    coords = ", ".join(str(int(v)) for v in box)
    return f"<think> {lead}: the region [{coords}] shows it. </think>. The answer is: \\boxed{{{answer}}}"


def write_run(folder: Path, data: Path, split: str, completions: dict[str, str], name: str) -> Path:
    """An evaluation run folder as evaluation.run writes it (the parts a study reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "name": name,
        "model": f"/models/{name}",
        "data": str(data.resolve()),
        "split": split,
        "reasoning": True,
        "max_new_tokens": 256,
        "backend": "transformers",
        "decoding": "greedy",
    }
    (folder / RUN_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    append_jsonl(folder / PREDICTIONS, [{"id": i, "completion": c} for i, c in completions.items()])
    return folder


def two_runs(root: Path, data: Path, split: str = "train") -> dict[str, str]:
    records = read_records(data, split=split)
    a = write_run(
        root / "eval" / RUNS[0], data, split, {r["id"]: completion(r, True) for r in records}, RUNS[0]
    )
    b = write_run(
        root / "eval" / RUNS[1], data, split, {r["id"]: completion(r, False) for r in records}, RUNS[1]
    )
    return {RUNS[0]: str(a), RUNS[1]: str(b)}


def make_study(
    root: Path, limit: int = 6, reviewers=("alice", "bob"), seed: int = 11, show_truth=False, source=None
) -> tuple[Path, dict[str, str], dict[str, str]]:
    """(study folder, runs, {reviewer: token})."""
    data = phantom(root, source=source)
    runs = two_runs(root, data)
    study, links = create_study(
        runs, root / "study", list(reviewers), limit=limit, seed=seed, show_truth=show_truth
    )
    return study, runs, dict(links)


def assignments(study: Path, reviewer: str) -> list[dict]:
    """The reviewer's items in order: position, item_id, run_a, run_b, idx, task, and vote columns."""
    with db.connect(db.study_db(study)) as conn:
        rid = next(r["reviewer_id"] for r in db.reviewers(conn) if r["name"] == reviewer)
        rows = [dict(r) for r in db.assignments(conn, rid)]
        for row in rows:
            row.update(idx=db.item(conn, row["item_id"])["idx"], task=db.item(conn, row["item_id"])["task"])
        return [{**r, "reviewer_id": rid} for r in rows]


def cast(study: Path, reviewer: str, winners_by_idx: dict[int, dict[str, str]]) -> None:
    """Vote as ``reviewer``: for the item of each index, each criterion's winner (a run name or 'tie')."""
    rows = {r["idx"]: r for r in assignments(study, reviewer)}
    with db.connect(db.study_db(study)) as conn:
        for idx, winners in winners_by_idx.items():
            row = rows[idx]
            shown = {
                k: "tie" if w == "tie" else ("A" if w == row["run_a"] else "B") for k, w in winners.items()
            }
            db.save_vote(conn, row["reviewer_id"], row["item_id"], shown)


class LiveServer:
    """The app under uvicorn on 127.0.0.1 (a free port), in a thread."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))

    def __enter__(self) -> LiveServer:
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def secrets_of(study) -> list[str]:
    """Strings a page must never show: run names and folders, dataset and image paths, record ids."""
    folder, runs, _ = study
    out = [*RUNS, *runs.values(), *(Path(d).name for d in runs.values())]
    with db.connect(db.study_db(folder)) as conn:
        for i in db.items(conn):
            out += [i["record_id"], *json.loads(i["images"])]
            out += [Path(p).name for p in json.loads(i["images"])]
        out.append(db.meta(conn)["data"])
    return out
