"""A study's SQLite database: one file per study, every write in a transaction.

Tables (``study.sqlite``):

    meta         key -> JSON value: seed, criteria, show_truth, created, credentialed sources, ...
    runs         the two evaluation runs (position 0 and 1, name, folder); never sent to a page
    items        one reviewed record each: an opaque ``item_id`` (what pages and URLs use), the
                 record's id, task, source, question, ground truth, image paths (server side only)
    completions  each run's completion for each item, copied at creation (votes refer to what was shown)
    reviewers    name, link token, the seed of their order and left/right sides
    assignments  per reviewer: position -> item, and which run is shown as A (left) and as B (right)
    votes        per reviewer and item: A / B / tie on each criterion, comment, time taken
    judge        per judge model, item and order: the VLM judge's A / B / tie on each criterion

A vote is stored as the reviewer saw it (A, B or tie); ``assignments`` says which run A and B were.
The rollback journal (not WAL) keeps the study one file at rest.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from data_prep.errors import OpenMedixError

DB_FILE = "study.sqlite"
CHOICES = ("A", "B", "tie")
MAX_ELAPSED_MS = 24 * 3600 * 1000  # a vote's time on its item: longer is not a measurement


class StudyNotFoundError(OpenMedixError, FileNotFoundError):
    """A study folder without its database (not created yet, or a typo in the path)."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def schema(criteria: list[str]) -> str:
    """The CREATE statements; one column per criterion (names are our constants, not user input)."""
    check = ", ".join(f"'{c}'" for c in CHOICES)
    vote_cols = "".join(f"    {c} TEXT NOT NULL CHECK ({c} IN ({check})),\n" for c in criteria)
    judge_cols = "".join(f"    {c} TEXT CHECK ({c} IN ({check})),\n" for c in criteria)
    return f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (position INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, dir TEXT NOT NULL);
CREATE TABLE items (
    item_id TEXT PRIMARY KEY,
    idx INTEGER NOT NULL UNIQUE,
    record_id TEXT NOT NULL UNIQUE,
    task TEXT NOT NULL,
    source TEXT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    boxes TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    images TEXT NOT NULL
);
CREATE TABLE completions (
    item_id TEXT NOT NULL REFERENCES items(item_id),
    run TEXT NOT NULL REFERENCES runs(name),
    text TEXT NOT NULL,
    PRIMARY KEY (item_id, run)
);
CREATE TABLE reviewers (
    reviewer_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token TEXT NOT NULL UNIQUE,
    seed TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE assignments (
    reviewer_id INTEGER NOT NULL REFERENCES reviewers(reviewer_id),
    position INTEGER NOT NULL,
    item_id TEXT NOT NULL REFERENCES items(item_id),
    run_a TEXT NOT NULL REFERENCES runs(name),
    run_b TEXT NOT NULL REFERENCES runs(name),
    PRIMARY KEY (reviewer_id, position),
    UNIQUE (reviewer_id, item_id)
);
CREATE TABLE votes (
    reviewer_id INTEGER NOT NULL,
    item_id TEXT NOT NULL,
{vote_cols}    comment TEXT NOT NULL DEFAULT '',
    elapsed_ms INTEGER,
    voted_at TEXT NOT NULL,
    revisions INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (reviewer_id, item_id),
    FOREIGN KEY (reviewer_id, item_id) REFERENCES assignments(reviewer_id, item_id)
);
CREATE TABLE judge (
    model TEXT NOT NULL,
    item_id TEXT NOT NULL REFERENCES items(item_id),
    run_a TEXT NOT NULL REFERENCES runs(name),
    run_b TEXT NOT NULL REFERENCES runs(name),
{judge_cols}    reply TEXT NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    judged_at TEXT NOT NULL,
    PRIMARY KEY (model, item_id, run_a)
);
"""


@contextlib.contextmanager
def connect(path: str | Path, create: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection (rows as sqlite3.Row, foreign keys on) that is closed afterwards.

    Group writes in ``with conn:`` (one transaction: committed at the end, rolled back on error).
    """
    path = Path(path)
    if not create and not path.exists():
        raise StudyNotFoundError(
            f"{path} not found: create the study first (python -m evaluation.review create ...)"
        )
    conn = sqlite3.connect(path, timeout=30.0)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA journal_mode = DELETE")
        yield conn
    finally:
        conn.close()


def study_db(study_dir: str | Path) -> Path:
    """The database file of a study folder (or the file itself)."""
    p = Path(study_dir)
    return p if p.suffix == ".sqlite" else p / DB_FILE


# ----------------------------------------------------------------------------- reading


def meta(conn: sqlite3.Connection) -> dict:
    return {row["key"]: json.loads(row["value"]) for row in conn.execute("SELECT key, value FROM meta")}


def run_names(conn: sqlite3.Connection) -> list[str]:
    return [row["name"] for row in conn.execute("SELECT name FROM runs ORDER BY position")]


def reviewers(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM reviewers ORDER BY reviewer_id").fetchall()


def item(conn: sqlite3.Connection, item_id: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM items WHERE item_id = ?", (item_id,)).fetchone()


def items(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM items ORDER BY idx").fetchall()


def completions(conn: sqlite3.Connection, item_id: str) -> dict[str, str]:
    rows = conn.execute("SELECT run, text FROM completions WHERE item_id = ?", (item_id,))
    return {row["run"]: row["text"] for row in rows}


def assignments(conn: sqlite3.Connection, reviewer_id: int) -> list[sqlite3.Row]:
    """The reviewer's items in presentation order, each with its vote columns (NULL when not voted)."""
    return conn.execute(
        """SELECT a.position, a.item_id, a.run_a, a.run_b, v.*
           FROM assignments a LEFT JOIN votes v
             ON v.reviewer_id = a.reviewer_id AND v.item_id = a.item_id
           WHERE a.reviewer_id = ? ORDER BY a.position""",
        (reviewer_id,),
    ).fetchall()


def votes(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Every vote with the reviewer's name, the item's record id and task, and the sides' runs."""
    return conn.execute(
        """SELECT r.name AS reviewer, i.record_id, i.task, i.source, a.position, a.run_a, a.run_b, v.*
           FROM votes v
           JOIN reviewers r ON r.reviewer_id = v.reviewer_id
           JOIN items i ON i.item_id = v.item_id
           JOIN assignments a ON a.reviewer_id = v.reviewer_id AND a.item_id = v.item_id
           ORDER BY r.reviewer_id, a.position"""
    ).fetchall()


def judge_rows(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute(
        """SELECT j.*, i.record_id, i.task FROM judge j JOIN items i ON i.item_id = j.item_id
           ORDER BY j.model, i.idx, j.run_a"""
    ).fetchall()


# ----------------------------------------------------------------------------- writing


def save_vote(
    conn: sqlite3.Connection,
    reviewer_id: int,
    item_id: str,
    choices: dict[str, str],
    comment: str = "",
    elapsed_ms: int | None = None,
) -> None:
    """Insert or replace (counting revisions) one reviewer's vote on one item, in one transaction."""
    if elapsed_ms is not None and not (0 <= elapsed_ms <= MAX_ELAPSED_MS):  # the app refuses it first
        raise ValueError(f"elapsed_ms {elapsed_ms} is outside 0..{MAX_ELAPSED_MS}")
    cols = list(choices)
    with conn:
        conn.execute(
            f"""INSERT INTO votes (reviewer_id, item_id, {", ".join(cols)}, comment, elapsed_ms, voted_at)
                VALUES (?, ?, {", ".join("?" for _ in cols)}, ?, ?, ?)
                ON CONFLICT (reviewer_id, item_id) DO UPDATE SET
                {", ".join(f"{c} = excluded.{c}" for c in cols)}, comment = excluded.comment,
                elapsed_ms = excluded.elapsed_ms, voted_at = excluded.voted_at,
                revisions = votes.revisions + 1""",
            (reviewer_id, item_id, *choices.values(), comment, elapsed_ms, now()),
        )


def save_judge(
    conn: sqlite3.Connection,
    model: str,
    item_id: str,
    run_a: str,
    run_b: str,
    verdicts: dict[str, str | None],
    reply: str,
    prompt_tokens: int | None,
    completion_tokens: int | None,
) -> None:
    cols = list(verdicts)
    with conn:
        conn.execute(
            f"""INSERT OR REPLACE INTO judge (model, item_id, run_a, run_b, {", ".join(cols)}, reply,
                    prompt_tokens, completion_tokens, judged_at)
                VALUES (?, ?, ?, ?, {", ".join("?" for _ in cols)}, ?, ?, ?, ?)""",
            (
                model,
                item_id,
                run_a,
                run_b,
                *verdicts.values(),
                reply,
                prompt_tokens,
                completion_tokens,
                now(),
            ),
        )
