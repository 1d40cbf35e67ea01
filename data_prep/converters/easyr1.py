"""EasyR1 / verl datasets, both ways: train EasyR1 on this repository's data, or read EasyR1 data in.

    python -m data_prep.converters.easyr1 export --data outputs/mixture --stage grpo --out data/easyr1
    python -m data_prep.converters.easyr1 import --input train.parquet --out data/imported \\
        [--frame_from outputs/phantom | --max_pixels 262144] [--source NAME] [--split train]

An EasyR1 dataset (as hiyouga/geometry3k) has ``images`` (a list of paths or ``{bytes, path}``),
``problem`` (text with one ``<image>`` placeholder per image) and ``answer``. DeepMedix-R1 trained
with EasyR1: its released reward has the signature of EasyR1's example reward and its prompt template
starts with EasyR1's ``{{ content | trim }}``.

export  writes OUT/<split>.parquet per record split (one stage of a mixture folder, or a dataset
        folder) with images embedded as ``{bytes, path}`` (``--images path`` writes absolute paths
        instead), ``problem`` = ``<image>`` placeholders + the question, ``answer``, and this
        repository's columns (id, task, source, split, boxes and meta as JSON text, width, height,
        patient_id, study_id, reasoning), which EasyR1 passes through untouched. OUT/format_prompt.jinja
        appends our reasoning instruction, as the paper's ``xray_format.jinja`` did; train with
          data.train_files=OUT/train.parquet data.val_files=OUT/validation.parquet
          data.format_prompt=OUT/format_prompt.jinja
          worker.reward.reward_type=batch worker.reward.reward_function=rewards/paper.py:compute_score
        (the paper's exact reward through EasyR1's batch signature). EasyR1 hands a reward function only
        the response and the answer, so the grounded reward (which reads boxes) stays in this repository.
import  reads an EasyR1 file (.parquet, .jsonl, .json; paths or embedded bytes) into the record
        schema through the YAML adapter (data_prep.converters.adapter, config
        data_prep/converters/easyr1.yaml): every image converted into the frame, leading ``<image>``
        placeholders dropped (others become image items at their place), the task from a ``task``
        column or else from the prompt text, rejects counted in OUT/ledger.json and kept, without image
        bytes, in OUT/rejects.jsonl.

Credentialed data: an export of MIMIC-derived records is credentialed data too (keep it local); the
importer marks rows credentialed only through ``--source`` or a ``source`` column (xraybench's own
config marks its rows credentialed by default).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml

from data_prep.errors import OpenMedixError, setup_logging, user_errors
from data_prep.families import DEFAULT_FAMILY, FAMILIES
from data_prep.frame import FACTOR, PAPER_MAX_PIXELS, QWEN_MIN_PIXELS, read_frame, write_frame
from data_prep.io import RECORDS, atomic_write_text, image_paths, read_records
from data_prep.prompts import REASONING_INSTRUCTION
from data_prep.schema import IMAGE_TOKEN, SPLITS, is_credentialed, record_images

CONFIG = Path(__file__).with_name("easyr1.yaml")
FORMAT_PROMPT = "format_prompt.jinja"
# Our columns besides EasyR1's three; boxes and meta as JSON text (nested lists of structs trip collators).
EXTRA_COLUMNS = ("id", "task", "source", "split", "width", "height", "patient_id", "study_id", "reasoning")
JSON_COLUMNS = ("boxes", "meta")
log = logging.getLogger(__name__)


class ExportError(OpenMedixError, ValueError):
    """What to export is not there: a mixture without a stage named, a folder that is no dataset, no
    records left after the filters."""


def problem_text(record: dict) -> str:
    """The question with one ``<image>`` per image: kept where the question places them, else first."""
    q = record["question"].strip()
    return q if IMAGE_TOKEN in q else IMAGE_TOKEN * len(record_images(record)) + q


def format_prompt() -> str:
    """EasyR1's format prompt (jinja over the problem) that renders our reasoning prompt."""
    return "{{ content | trim }}\n\n" + REASONING_INSTRUCTION + "\n"


def to_row(record: dict, dataset_dir: Path, embed: bool) -> dict:
    images = []
    for path in image_paths(dataset_dir, record):
        if embed:
            images.append({"bytes": path.read_bytes(), "path": path.name})
        else:
            images.append({"bytes": None, "path": str(path.resolve())})
    row = {"images": images, "problem": problem_text(record), "answer": record["answer"]}
    row.update({k: record.get(k) for k in EXTRA_COLUMNS})
    row.update({k: json.dumps(record.get(k), ensure_ascii=False, sort_keys=True) for k in JSON_COLUMNS})
    return row


def load_source(data: str | Path, stage: str | None) -> tuple[list[dict], Path, dict | None]:
    """(records, the folder their image paths start from, frame) of a dataset or mixture folder."""
    data = Path(data)
    if (data / "mixture.json").exists():
        from data_prep.mixture import load_mixture

        if not stage:
            stages = sorted({p.name.split("-")[0] for p in (data / "data").glob("*.parquet")})
            raise ExportError(f"{data} is a mixture: name its stage with --stage ({', '.join(stages)})")
        return load_mixture(data, stage), data, read_frame(data)
    if not (data / RECORDS).exists():
        raise ExportError(f"{data}: neither a dataset folder ({RECORDS}) nor a mixture folder (mixture.json)")
    return read_records(data), data, read_frame(data)


def export(
    data: str | Path,
    out: str | Path,
    stage: str | None = None,
    splits: list[str] | None = None,
    tasks: list[str] | None = None,
    embed: bool = True,
    progress: bool = True,
) -> dict[str, int]:
    """Write OUT/<split>.parquet (+ format_prompt.jinja, frame.json); returns rows per split."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    records, root, frame = load_source(data, stage)
    records = [
        r for r in records if (not tasks or r["task"] in tasks) and (not splits or r["split"] in splits)
    ]
    if not records:
        raise ExportError(f"{data}: no records for splits={splits} tasks={tasks}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in SPLITS:
        recs = [r for r in records if r["split"] == split]
        if not recs:
            continue
        rows = [to_row(r, root, embed) for r in tqdm(recs, desc=f"export {split}", disable=not progress)]
        tmp = out / f".{split}.parquet.tmp"
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        tmp.replace(out / f"{split}.parquet")
        counts[split] = len(rows)
    atomic_write_text(out / FORMAT_PROMPT, format_prompt())
    if frame:
        write_frame(
            out, frame["min_pixels"], frame["max_pixels"], frame.get("factor", FACTOR), frame.get("family")
        )
    log.info("EasyR1 dataset in %s: %s", out, ", ".join(f"{s} {n}" for s, n in counts.items()))
    if credentialed := sorted({r["source"] for r in records if is_credentialed(r["source"])}):
        log.warning(
            "%s holds credentialed data (%s): keep it local, never in git or a hub",
            out,
            ", ".join(credentialed),
        )
    return counts


def import_config(
    source: str | None = None,
    split: str | None = None,
    frame: dict | None = None,
    config: str | Path = CONFIG,
) -> dict:
    """The adapter config for an EasyR1 file, with the command line's overrides applied."""
    from data_prep.converters.adapter import load_config

    cfg = load_config(config)
    if source:
        cfg["source"] = source
    if split:
        cfg.setdefault("constants", {})["split"] = split
        cfg["columns"].pop("split", None)  # the flag wins over a split column
    if frame is not None:
        cfg["frame"] = frame
    return cfg


def import_file(
    input_path: str | Path,
    out: str | Path,
    source: str | None = None,
    split: str | None = None,
    frame: dict | None = None,
    image_root: str | Path | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """An EasyR1 file -> OUT (records.jsonl, images/, frame.json, ledger.json, rejects.jsonl)."""
    from data_prep.converters.adapter import adapt

    cfg = import_config(source, split, frame)
    return adapt(cfg, input_path, out, image_root=image_root, workers=workers, progress=progress)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m data_prep.converters.easyr1",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="a dataset folder or a mixture stage -> EasyR1 parquet")
    ex.add_argument("--data", required=True, help="dataset folder (records.jsonl) or mixture folder")
    ex.add_argument("--stage", help="the mixture stage to export (sft, coldstart, grpo, ...)")
    ex.add_argument("--out", required=True)
    ex.add_argument("--splits", nargs="+", choices=SPLITS, help="record splits to write (default: all)")
    ex.add_argument("--tasks", nargs="+", help="only these tasks (default: all)")
    ex.add_argument(
        "--images", choices=("embed", "path"), default="embed", help="image bytes or absolute paths"
    )
    im = sub.add_parser("import", help="an EasyR1 file -> a dataset folder in the record schema")
    im.add_argument("--input", required=True, help=".parquet / .jsonl / .json in EasyR1 layout")
    im.add_argument("--out", required=True)
    im.add_argument(
        "--source",
        help="record source (default: a source column, else 'easyr1'); "
        "name a MIMIC-derived set e.g. 'mimic-cxr:NAME' so it is treated as credentialed",
    )
    im.add_argument(
        "--split", choices=SPLITS, help="split of every row (default: a split column, else train)"
    )
    im.add_argument("--frame_from", help="dataset folder whose frame.json to convert images into")
    im.add_argument("--min_pixels", type=int, default=QWEN_MIN_PIXELS)
    im.add_argument("--max_pixels", type=int, default=PAPER_MAX_PIXELS)
    im.add_argument(
        "--family", choices=list(FAMILIES), default=DEFAULT_FAMILY, help="model family of the frame"
    )
    im.add_argument("--image_root", help="folder relative image paths start from (default: the input's)")
    im.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    setup_logging()
    # bad input is one line; OPENMEDIX_DEBUG=1 shows the traceback (data_prep.errors)
    with user_errors(f"easyr1 {args.cmd}", FileNotFoundError, ValueError, yaml.YAMLError):
        if args.cmd == "export":
            export(args.data, args.out, args.stage, args.splits, args.tasks, embed=args.images == "embed")
            return
        if args.frame_from:
            frame = read_frame(args.frame_from)
            if frame is None:
                raise FileNotFoundError(f"--frame_from {args.frame_from}: no frame.json there")
        else:
            frame = {"min_pixels": args.min_pixels, "max_pixels": args.max_pixels, "family": args.family}
        frame = {k: frame[k] for k in ("min_pixels", "max_pixels", "family") if k in frame}
        import_file(args.input, args.out, args.source, args.split, frame, args.image_root, args.workers)


if __name__ == "__main__":
    main(sys.argv[1:])
