"""Stage mixtures: converter outputs -> one HF dataset (parquet shards), one split per stage.

Usage:
    python -m data_prep.mixture --config recipes/mixtures/example.yaml --out data/mixtures/example \\
        [--source mimic=/data/mimic-cxr ...] [--jsonl] [--dry_run]

The YAML (see recipes/mixtures/example.yaml):

    name: example
    seed: 0                          # default seed of every selection
    frame: {min_pixels: 3136, max_pixels: 262144}   # optional; checked against the sources
    sources:                         # name -> dataset folder made by a converter
      mimic: data/mimic-cxr          #   (relative paths: to the current directory;
      vindr: data/vindr-cxr          #    --source NAME=PATH overrides one)
    stages:                          # any of: sft, coldstart, rl, test
      sft:
        - source: mimic
          tasks: [report_findings, report_impression]   # default: all tasks
          splits: [train]            # default: [train]; [test] in the test stage
          count: 20000               # or fraction: 0.5 (default fraction: 1.0)
          seed: 1                    # optional
          question_types: [presence] # optional filter on meta.question_type
          need_reasoning: false      # optional: keep only records with reasoning
      test:
        - {source: mimic, tasks: [report_findings], splits: [test], count: 1906}

Rules: every source must have the same frame.json (and match ``frame`` when given);
duplicates inside a stage are removed (same image - MIMIC dicom id when known, else file -
task, question and answer; or same source and id); a patient (MIMIC-derived sources share
one id space, CheXpert and CheXpert Plus another) must not appear under two record splits
anywhere in the mixture, the test stage may hold only validation / test records and the
training stages no test records - otherwise the builder stops naming the patient, splits,
stages and sources. Sampling: candidates sorted by id, ``random.Random(seed).sample``.

Output (an HF dataset folder; ``datasets.load_dataset(OUT)`` gives one split per stage):

    OUT/data/<stage>-00000-of-0000N.parquet   columns = the schema fields; ``boxes`` and
                                             ``meta`` as JSON strings; ``image`` relative to OUT
    OUT/README.md     dataset card whose YAML header maps stages to files
    OUT/frame.json    the common frame;   OUT/mixture.json   config, counts, removals
    OUT/<stage>/records.jsonl (+ frame.json) with --jsonl: a dataset folder for the recipes

Records point into their source folders, so every frame.json written here lists those folders
(and the sources' own image roots) under ``image_roots``: data_prep.io.resolve_image reads an
image only inside the dataset folder or such a root.

:func:`load_mixture` returns the records of one stage in the schema (boxes / meta decoded,
image made absolute).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import yaml

from data_prep.errors import OpenMedixError, setup_logging, user_errors
from data_prep.frame import IMAGE_ROOTS, read_frame, write_frame
from data_prep.io import (
    DatasetNotFoundError,
    atomic_write_text,
    image_roots,
    map_images,
    read_records,
    resolve_image,
    write_jsonl,
)
from data_prep.labels import stable_hash
from data_prep.schema import REQUIRED, TASKS, RecordError, image_key, validate_record

log = logging.getLogger(__name__)

STAGES = ("sft", "coldstart", "rl", "test")
COLUMNS = (*REQUIRED, "reasoning", "meta")
JSON_COLUMNS = ("boxes", "meta")
PATIENT_NAMESPACE = {
    "mimic-cxr": "mimic",
    "mimic-cxr-jpg": "mimic",
    "ms-cxr": "mimic",
    "mimic-cxr-vqa": "mimic",
    "medical-diff-vqa": "mimic",
    "chest-imagenome": "mimic",
    "chexpert": "chexpert",
    "chexpert-plus": "chexpert",
}
SELECTION_KEYS = {
    "source",
    "tasks",
    "splits",
    "count",
    "fraction",
    "seed",
    "question_types",
    "need_reasoning",
}


class MixtureError(OpenMedixError, ValueError):
    """A mixture that must not be written; the message says why and where."""


# ------------------------------------------------------------------------------ config


def load_config(path: str | Path, overrides: dict[str, str] | None = None) -> dict:
    cfg = yaml.safe_load(Path(path).read_text())
    if not isinstance(cfg, dict) or "sources" not in cfg or "stages" not in cfg:
        raise MixtureError(f"{path}: a mixture needs `sources:` and `stages:`")
    cfg["sources"] = {**cfg["sources"], **(overrides or {})}
    for stage, selections in cfg["stages"].items():
        if stage not in STAGES:
            raise MixtureError(f"{path}: unknown stage '{stage}' (expected one of {', '.join(STAGES)})")
        for i, sel in enumerate(selections or []):
            where = f"{path}: stages.{stage}[{i}]"
            if not isinstance(sel, dict) or "source" not in sel:
                raise MixtureError(f"{where}: each selection needs `source:`")
            if unknown := set(sel) - SELECTION_KEYS:
                raise MixtureError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
            if sel["source"] not in cfg["sources"]:
                raise MixtureError(f"{where}: source '{sel['source']}' is not listed under `sources:`")
            if "count" in sel and "fraction" in sel:
                raise MixtureError(f"{where}: give `count` or `fraction`, not both")
            if bad := set(sel.get("tasks") or []) - set(TASKS):
                raise MixtureError(f"{where}: unknown task(s) {', '.join(sorted(bad))}")
    return cfg


def check_frames(cfg: dict) -> dict:
    """The frame every source shares; raises naming the sources when they differ."""
    frames = {}
    for name in sorted({s["source"] for sels in cfg["stages"].values() for s in sels or []}):
        frame = read_frame(cfg["sources"][name])
        if frame is None:
            raise MixtureError(
                f"source '{name}' ({cfg['sources'][name]}) has no frame.json: make it with a converter"
            )
        frame.pop(IMAGE_ROOTS, None)  # where a source's images lie is no part of the frame
        frames[name] = frame
    distinct = {json.dumps(f, sort_keys=True) for f in frames.values()}
    if len(distinct) > 1:
        listing = "; ".join(f"{n}: {f}" for n, f in frames.items())
        raise MixtureError(
            f"the sources were prepared for different frames ({listing}); convert them again with one --min_pixels/--max_pixels"
        )
    frame = next(iter(frames.values())) if frames else None
    wanted = cfg.get("frame")
    if wanted and frame and any(frame.get(k) != v for k, v in wanted.items()):
        raise MixtureError(f"the mixture asks for frame {wanted}, the sources have {frame}")
    return frame


# ----------------------------------------------------------------------------- building


def _select(records: list[dict], sel: dict, stage: str, seed: int) -> tuple[list[dict], dict]:
    splits = sel.get("splits") or (["test"] if stage == "test" else ["train"])
    tasks, qtypes = sel.get("tasks"), sel.get("question_types")
    pool = [
        r
        for r in records
        if r["split"] in splits
        and (not tasks or r["task"] in tasks)
        and (not qtypes or (r.get("meta") or {}).get("question_type") in qtypes)
        and (not sel.get("need_reasoning") or (r.get("reasoning") or "").strip())
    ]
    pool.sort(key=lambda r: r["id"])
    want = sel["count"] if "count" in sel else round(float(sel.get("fraction", 1.0)) * len(pool))
    take = random.Random(seed).sample(pool, min(want, len(pool)))
    info = {"available": len(pool), "requested": want, "selected": len(take)}
    return take, info


def _image_key(rec: dict, source_dir: Path) -> str:
    meta = rec.get("meta") or {}
    ident = meta.get("dicom_id") or meta.get("image_id")
    return f"id:{ident}" if ident else f"file:{resolve_image(source_dir, image_key(rec))}"


def patient_key(rec: dict) -> str:
    return f"{PATIENT_NAMESPACE.get(rec['source'], rec['source'])}:{rec['patient_id']}"


def check_leaks(stages: dict[str, list[dict]]) -> None:
    """Stop when a patient appears under two splits, or a stage holds records of the wrong split."""
    for stage, recs in stages.items():
        wrong = {"train"} if stage == "test" else {"test"}
        bad = [r for r in recs if r["split"] in wrong]
        if bad:
            r = bad[0]
            raise MixtureError(
                f"stage '{stage}' holds {len(bad)} record(s) of split '{r['split']}' (first: {r['id']} from "
                f"{r['source']}); the test stage takes validation/test records only and training stages no test records"
            )
    seen: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for stage, recs in stages.items():
        for r in recs:
            seen[patient_key(r)][r["split"]].add(f"{stage}/{r['source']}")
    leaks = {p: s for p, s in seen.items() if len(s) > 1}
    if leaks:
        listing = [
            f"patient {p}: "
            + " and ".join(f"{split} ({', '.join(sorted(w))})" for split, w in sorted(s.items()))
            for p, s in sorted(leaks.items())[:10]
        ]
        more = [f"... and {len(leaks) - 10} more"] if len(leaks) > 10 else []
        raise MixtureError(
            f"{len(leaks)} patient(s) appear in two splits - the mixture would leak: "
            + "; ".join(listing + more)
        )


def build(cfg: dict) -> tuple[dict[str, list[dict]], dict]:
    """(stage -> records with absolute image paths, summary). Raises MixtureError."""
    frame = check_frames(cfg)
    base_seed = int(cfg.get("seed", 0))
    cache: dict[str, list[dict]] = {}
    stages: dict[str, list[dict]] = {}
    used = sorted({s["source"] for sels in cfg["stages"].values() for s in sels or []})
    # the folders the mixture's records point into (not $OPENMEDIX_IMAGE_ROOTS: that stays the user's)
    roots = [str(r) for name in used for r in image_roots(cfg["sources"][name], env=False)]
    summary: dict = {
        "name": cfg.get("name"),
        "frame": frame,
        "image_roots": list(dict.fromkeys(roots)),
        "stages": {},
    }
    for stage, selections in cfg["stages"].items():
        out, seen, removed, picks = [], set(), Counter(), []
        for i, sel in enumerate(selections or []):
            name = sel["source"]
            folder = Path(cfg["sources"][name])
            if name not in cache:
                cache[name] = read_records(folder)
            seed = int(sel.get("seed", stable_hash(f"{base_seed}/{stage}/{i}/{name}") % 2**31))
            take, info = _select(cache[name], sel, stage, seed)
            picks.append({"source": name, "seed": seed, **info})
            if info["selected"] < info["requested"]:
                log.warning(
                    "%s[%d] %s: asked for %d, only %d available",
                    stage,
                    i,
                    name,
                    info["requested"],
                    info["available"],
                )
            for rec in take:
                try:
                    image = _image_key(rec, folder)
                    rec = map_images(rec, lambda i, f=folder: str(resolve_image(f, i)))
                except RecordError as e:  # an image outside the source folder: name the source and record
                    raise MixtureError(f"source '{name}' ({folder}) record {rec['id']!r}: {e}") from None
                keys = (
                    f"rid:{rec['source']}/{rec['id']}",
                    (image, rec["task"], rec["question"].strip().lower(), rec["answer"].strip().lower()),
                )
                if any(k in seen for k in keys):
                    removed["duplicate"] += 1
                    continue
                seen.update(keys)
                out.append(rec)
        random.Random(stable_hash(f"{base_seed}/{stage}/order")).shuffle(out)
        stages[stage] = out
        summary["stages"][stage] = {
            "records": len(out),
            "duplicates_removed": removed["duplicate"],
            "selections": picks,
            "by_source_task_split": _counts(out),
            "without_reasoning": sum(not (r.get("reasoning") or "").strip() for r in out),
        }
    check_leaks(stages)
    return stages, summary


def _counts(recs: list[dict]) -> dict:
    c = Counter((r["source"], r["task"], r["split"]) for r in recs)
    return {f"{s} | {t} | {sp}": n for (s, t, sp), n in sorted(c.items())}


# ------------------------------------------------------------------------------ writing


def to_row(rec: dict, out_dir: Path) -> dict:
    row = {k: rec.get(k) for k in COLUMNS}
    rel = map_images(rec, lambda i: os.path.relpath(i, out_dir.resolve()))["image"]
    row["image"] = rel if isinstance(rel, str) else json.dumps(rel)  # several views: a JSON list
    for k in JSON_COLUMNS:
        row[k] = json.dumps(rec.get(k), ensure_ascii=False, sort_keys=True)
    return row


def from_row(row: dict, root: str | Path) -> dict:
    """A parquet row -> a schema record (JSON columns decoded, image absolute)."""
    rec = {k: row[k] for k in COLUMNS}
    for k in JSON_COLUMNS:
        rec[k] = json.loads(rec[k]) if isinstance(rec[k], str) else rec[k]
    if rec["image"].startswith("["):
        rec["image"] = json.loads(rec["image"])
    return map_images(rec, lambda i: os.path.normpath(resolve_image(Path(root).resolve(), i)))


def _dataset_card(name: str | None, stages: dict[str, int]) -> str:
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for stage in stages:
        lines += [f"  - split: {stage}", f"    path: data/{stage}-*.parquet"]
    lines += ["---", "", f"# Mixture {name or ''}".rstrip(), ""]
    lines.append(
        "Made by `python -m data_prep.mixture`; one split per training stage. Columns are the record"
    )
    lines.append("schema of `data_prep/schema.py`; `boxes` and `meta` hold JSON text; `image` is relative to")
    lines.append("this folder (a study with several images holds a JSON list of paths).")
    lines.append("`data_prep.mixture.load_mixture(path, stage)` returns decoded records.")
    lines += ["", "| stage | records |", "|---|---|"] + [f"| {s} | {n} |" for s, n in stages.items()]
    return "\n".join(lines) + "\n"


def write(
    stages: dict[str, list[dict]],
    summary: dict,
    out: str | Path,
    shard_rows: int = 50_000,
    jsonl: bool = False,
) -> None:
    """Write the mixture folder atomically (built aside, then renamed into place)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / "mixture.json").exists():
        raise MixtureError(f"{out} exists and is not a mixture folder; choose an empty or new --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    schema = pa.schema([(k, pa.int32() if k in ("width", "height") else pa.string()) for k in COLUMNS])
    try:
        for stage, recs in stages.items():
            rows = [to_row(r, out) for r in recs]
            n = max(1, -(-len(rows) // shard_rows))
            for i in range(n):
                part = rows[i * shard_rows : (i + 1) * shard_rows]
                table = pa.Table.from_pylist(part, schema=schema)
                pq.write_table(table, tmp / "data" / f"{stage}-{i:05d}-of-{n:05d}.parquet")
            if jsonl:
                folder = tmp / stage
                write_jsonl(
                    folder / "records.jsonl",
                    [map_images(r, lambda i, s=stage: os.path.relpath(i, (out / s).resolve())) for r in recs],
                )
                write_frame(
                    folder,
                    summary["frame"]["min_pixels"],
                    summary["frame"]["max_pixels"],
                    image_roots=summary.get("image_roots"),
                )
        if summary["frame"]:
            write_frame(
                tmp,
                summary["frame"]["min_pixels"],
                summary["frame"]["max_pixels"],
                image_roots=summary.get("image_roots"),
            )
        atomic_write_text(
            tmp / "README.md", _dataset_card(summary.get("name"), {s: len(r) for s, r in stages.items()})
        )
        atomic_write_text(tmp / "mixture.json", json.dumps(summary, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def summary_text(summary: dict) -> str:
    """The mixture's records per stage and per source | task | split, as the command prints them."""
    lines = [f"[mixture {summary.get('name')}] frame {summary['frame']}"]
    for stage, s in summary["stages"].items():
        lines.append(f"  {stage}: {s['records']} records ({s['duplicates_removed']} duplicates removed)")
        lines += [f"      {n:>8}  {key}" for key, n in s["by_source_task_split"].items()]
        if stage == "coldstart" and s["without_reasoning"]:
            lines.append(f"      warning: {s['without_reasoning']} cold-start records have no reasoning")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ reading


def load_mixture(path: str | Path, stage: str, split: str | None = None, validate: bool = True) -> list[dict]:
    """The records of one stage of a mixture folder, in the schema (optionally one record split)."""
    import pyarrow.parquet as pq

    path = Path(path)
    files = sorted((path / "data").glob(f"{stage}-*.parquet"))
    if not files:
        raise DatasetNotFoundError(
            f"no stage '{stage}' in {path} (files data/{stage}-*.parquet): build the mixture with that stage"
        )
    out = []
    for f in files:
        for row in pq.read_table(f).to_pylist():
            rec = from_row(row, path)
            if split is None or rec["split"] == split:
                out.append(validate_record(rec) if validate else rec)
    return out


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    p = argparse.ArgumentParser(prog="python -m data_prep.mixture", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="mixture YAML (recipes/mixtures/*.yaml)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--source", action="append", default=[], metavar="NAME=PATH", help="override a source folder"
    )
    p.add_argument("--shard_rows", type=int, default=50_000)
    p.add_argument(
        "--jsonl", action="store_true", help="also write OUT/<stage>/records.jsonl dataset folders"
    )
    p.add_argument("--dry_run", action="store_true", help="check and count, write nothing")
    args = p.parse_args(argv)
    overrides = dict(s.split("=", 1) for s in args.source)
    with user_errors("data_prep.mixture", OpenMedixError, FileNotFoundError):
        cfg = load_config(args.config, overrides)
        stages, summary = build(cfg)
        summary["config"] = str(args.config)
        print(summary_text(summary))
        if not args.dry_run:
            write(stages, summary, args.out, args.shard_rows, args.jsonl)
            print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
