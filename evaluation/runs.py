"""An evaluation run's folder: its file names and readers, shared by run, compare, gallery and review.

A leaf module (it imports nothing from evaluation), so the modules that use it never import each other
in a circle.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from data_prep.errors import OpenMedixError
from data_prep.io import read_resume_log

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
RUN_CONFIG = "run_config.json"
RESULTS = "results.json"
PER_SAMPLE = "per_sample.jsonl"
METRIC_ROWS = "metric_rows.npz"  # evaluation.stats.save_statistics: what compare pairs
GALLERY = "gallery.html"
DEFAULT_MAX_NEW_TOKENS = 256


class RunError(OpenMedixError, ValueError):
    """An evaluation run that cannot go on as asked: other settings than its folder's, no records,
    missing predictions, a malformed --runs item."""


class RunNotFoundError(OpenMedixError, FileNotFoundError):
    """A run folder without the file a command reads (it was not evaluated, or not to the end)."""


def load_predictions(path: str | Path, repair: bool = False) -> dict[str, str]:
    """{id: completion} from a predictions file; a torn last line (killed mid-write) is dropped, and
    with ``repair`` removed from the file so that appending continues on a clean line."""
    rows = read_resume_log(path, lambda r: "id" in r and isinstance(r.get("completion"), str), repair)
    return {str(r["id"]): r["completion"] for r in rows}


def parse_runs(items: list[str]) -> dict[str, str]:
    """``NAME=FOLDER`` items as {name: folder}."""
    runs = {}
    for item in items:
        if "=" not in item:
            raise RunError(f"--runs takes NAME=FOLDER items, got '{item}'")
        name, folder = item.split("=", 1)
        if not name or name in runs:
            raise RunError(f"--runs: empty or repeated run name in '{item}'")
        runs[name] = folder
    return runs


def load_results(folder: str | Path) -> dict:
    path = Path(folder) / RESULTS
    if not path.exists():
        raise RunNotFoundError(f"{path} not found: run `python -m evaluation.run ... --out {folder}` first")
    return json.loads(path.read_text())


def load_run(out_dir: str | Path) -> tuple[dict, dict[str, str], dict[str, dict]]:
    """(results, predictions, per-sample scores by id) of an evaluation.run output folder."""
    out = Path(out_dir)
    results = json.loads((out / RESULTS).read_text()) if (out / RESULTS).exists() else {}
    preds = load_predictions(out / PREDICTIONS)
    per = {}
    if (out / PER_SAMPLE).exists():
        for line in (out / PER_SAMPLE).read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                per[row["id"]] = row
    return results, preds, per
