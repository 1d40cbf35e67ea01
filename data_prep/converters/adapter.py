"""Map another benchmark's file onto the record schema, driven by a YAML config.

    python -m evaluation.adapter --config evaluation/adapters/xraybench.yaml \\
        --input ~/data/xraybench/test.parquet --out data/xraybench [--image_root DIR] [--workers 2]

Reads JSON / JSONL / Parquet / CSV / TSV rows and, per the config:

  columns:   schema field -> candidate input columns (the first one present and non-empty wins);
             id, question, answer, image are required (id falls back to "<name>-<row>"),
             patient_id / study_id / boxes / width / height / split / reasoning / meta are optional
             (split overrides constants.split per row; meta, a dict or JSON text, is merged in)
  constants: fixed schema fields (e.g. split: test)
  source:    a constant, or {column: [...], map: {value: source}, default: ...}
  task:      {constant: TASK} or {column: [...], map: {value: task}, contains: [[substring, task]],
             text: [[regex, task]], default: TASK or null}: column values are matched
             case-insensitively, exact map first, then the first substring rule; where no column
             gives a task, the first ``text`` regex found in the question (case-insensitive) decides;
             no match and no default -> the row is rejected, naming the prompt's first words
  meta:      record meta key -> candidate columns (e.g. question_type, which VQA metrics group by)
  image_root: folder that relative image paths are relative to (default: the input's folder;
             --image_root overrides)
  frame:     {min_pixels, max_pixels, family}: each image is converted once into the model frame
             (data_prep.images, cached) and stored as OUT/images/<sha256 prefix of its bytes>.png
             (distinct images never share a file, identical ones are stored once); null keeps the
             original files and reads their size (then the processor resizes at run time and
             reasoning boxes are checked against the original size)

Images may be paths, lists of paths (a multi-view study: every image is kept, in order, and the
record's ``image`` is a list) or embedded bytes ({"bytes": ..., "path": ...} as Hugging Face
datasets store them in Parquet). ``<image>`` placeholders in the question must number 0 or one per
image; leading ones are dropped (images first is the prompt default), others stay and become image
items at their place (data_prep.prompts.user_content). Invalid rows are not written: they are
counted by reason in OUT/ledger.json and kept in OUT/rejects.jsonl (data_prep.io.Ledger), with
image bytes replaced by their size and hash and long texts cut. Output: OUT/records.jsonl (+ images/,
frame.json). A re-import into the same OUT stores changed images anew, deletes the files no record
uses any more and counts both in the ledger (``reimport``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from data_prep.errors import OpenMedixError, setup_logging, user_errors
from data_prep.families import get_family
from data_prep.frame import IMAGE_ROOTS, scale_box, write_frame
from data_prep.io import RECORDS, Ledger, atomic_write_text, iter_jsonl, write_jsonl
from data_prep.schema import IMAGE_TOKEN, LIST_SEP, SPLITS, TASKS, RecordError, make_record, record_images

REQUIRED = ("question", "answer", "image")
# Rows with fewer <image> placeholders than images: `strict` rejects them (a training import, where the
# model must see each image where its text says); `images_first` puts all of a row's images at its one
# placeholder (a benchmark prompt that says "the provided image(s)" over a frontal + lateral study).
PLACEHOLDER_POLICIES = ("strict", "images_first")
KNOWN_COLUMNS = (
    "id",
    "question",
    "answer",
    "image",
    "patient_id",
    "study_id",
    "boxes",
    "width",
    "height",
    "split",
    "reasoning",
    "meta",
)
REJECT_TEXT_CHARS = 200  # longer texts are cut in rejects.jsonl (a report, a base64 string)
HASH_CHARS = 20  # stored images are named by 80 bits of their SHA-256: no two distinct images collide
log = logging.getLogger(__name__)


class ConfigError(OpenMedixError, ValueError):
    """The YAML config is malformed; the message names the key."""


# ----------------------------------------------------------------------------- reading


def read_rows(path: str | Path, broken: list | None = None) -> list[dict]:
    """Rows of a .jsonl / .json / .parquet / .csv / .tsv file as dicts. A .jsonl line that is not valid
    UTF-8 or JSON goes to ``broken`` as (line number, reason) when given, else raises naming file:line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        try:
            return [row for _, row in iter_jsonl(path, broken)]
        except RecordError as e:
            raise ValueError(str(e)) from None
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        return _json_rows(data, path)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    raise ValueError(f"{path}: unsupported file type '{suffix}' (use .jsonl, .json, .parquet, .csv or .tsv)")


def _json_rows(data, path: Path) -> list[dict]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        if (
            lists
            and all(isinstance(v, list) for v in data.values())
            and len({len(v) for v in lists.values()}) == 1
        ):
            if all(not isinstance(v[0], dict) for v in lists.values() if v):  # column-oriented
                n = len(next(iter(lists.values())))
                return [{k: v[i] for k, v in lists.items()} for i in range(n)]
        for key in ("data", "rows", "test", "records", "items", "samples"):
            if isinstance(data.get(key), list):
                return data[key]
        if len(lists) == 1:
            return next(iter(lists.values()))
    raise ValueError(f"{path}: expected a list of objects (or an object holding one under 'data')")


# ----------------------------------------------------------------------------- config


def load_config(path: str | Path) -> dict:
    cfg = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: the config must be a mapping")
    cfg.setdefault("name", Path(path).stem)
    cols = cfg.setdefault("columns", {})
    for field, cands in list(cols.items()):
        if field not in KNOWN_COLUMNS:
            raise ConfigError(f"{path}: columns.{field}: unknown field (known: {', '.join(KNOWN_COLUMNS)})")
        cols[field] = [cands] if isinstance(cands, str) else list(cands or [])
    for field in REQUIRED:
        if not cols.get(field):
            raise ConfigError(f"{path}: columns.{field} is required (candidate column names)")
    task = cfg.get("task")
    if not isinstance(task, dict) or not (task.get("constant") or task.get("column") or task.get("text")):
        raise ConfigError(
            f"{path}: task needs 'constant: TASK', 'column: [...]' or 'text: [[regex, TASK], ...]' "
            "(+ map / contains / default)"
        )
    for rule in task.get("text") or []:
        if not (isinstance(rule, (list, tuple)) and len(rule) == 2):
            raise ConfigError(f"{path}: task.text rules are [regex, TASK] pairs, got {rule!r}")
        try:
            re.compile(rule[0])
        except re.error as e:
            raise ConfigError(f"{path}: task.text regex {rule[0]!r}: {e}") from None
    for t in _task_targets(task):
        if t not in TASKS:
            raise ConfigError(f"{path}: task maps to unknown task '{t}' (expected one of {', '.join(TASKS)})")
    split = (cfg.get("constants") or {}).get("split", "test")
    if split not in SPLITS:
        raise ConfigError(f"{path}: constants.split '{split}' is not one of {', '.join(SPLITS)}")
    frame = cfg.get("frame")
    if frame is not None and not {"min_pixels", "max_pixels"} <= set(frame):
        raise ConfigError(f"{path}: frame needs min_pixels and max_pixels (or frame: null)")
    policy = cfg.setdefault("placeholder_policy", "strict")
    if policy not in PLACEHOLDER_POLICIES:
        raise ConfigError(
            f"{path}: placeholder_policy '{policy}' is not one of {', '.join(PLACEHOLDER_POLICIES)}"
        )
    return cfg


def _task_targets(task: dict) -> Iterable[str]:
    if task.get("constant"):
        yield task["constant"]
    yield from (task.get("map") or {}).values()
    yield from (t for _, t in (task.get("contains") or []))
    yield from (t for _, t in (task.get("text") or []))
    if task.get("default"):
        yield task["default"]


def _present(value) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and value != value:  # NaN from CSV/Parquet
        return False
    if isinstance(value, (str, bytes, list, tuple, dict)) and len(value) == 0:
        return False
    return not (isinstance(value, str) and not value.strip())


def pick(row: dict, candidates) -> tuple[object, str | None]:
    """(value, column) of the first candidate column present and non-empty in row."""
    for c in [candidates] if isinstance(candidates, str) else candidates or []:
        if c in row and _present(row[c]):
            return row[c], c
    return None, None


def resolve_task(row: dict, task_cfg: dict, question: str = "") -> tuple[str | None, dict]:
    """(task or None, where it came from: {"task_value": column value} or {"task_rule": regex})."""
    if task_cfg.get("constant"):
        return task_cfg["constant"], {}
    value, _ = pick(row, task_cfg.get("column"))
    key = str(value).strip().lower() if value is not None else ""
    why = {"task_value": str(value)[:80]} if value is not None else {}
    mapping = {str(k).strip().lower(): v for k, v in (task_cfg.get("map") or {}).items()}
    if key in mapping:
        return mapping[key], why
    if key in TASKS:
        return key, why
    for sub, task in task_cfg.get("contains") or []:
        if key and str(sub).lower() in key:
            return task, why
    if value is None:  # a task column's value that maps nowhere is rejected, not guessed from the text
        for pattern, task in task_cfg.get("text") or []:
            if re.search(pattern, question or "", re.IGNORECASE):
                return task, {"task_rule": pattern}
    return task_cfg.get("default"), why


def first_words(text: str, n: int = 8) -> str:
    words = str(text).replace(IMAGE_TOKEN, " ").split()
    return " ".join(words[:n]) + (" ..." if len(words) > n else "")


def spread_placeholder(question: str, n_images: int, policy: str) -> str:
    """``images_first``: a question with one ``<image>`` for several images gets them all at that place
    (leading, as benchmark prompts put it: images first); anything else is left to ``place_images``."""
    if policy == "images_first" and n_images > 1 and question.count(IMAGE_TOKEN) == 1:
        return question.replace(IMAGE_TOKEN, IMAGE_TOKEN * n_images)
    return question


def place_images(question: str, n_images: int) -> str:
    """The question with leading ``<image>`` placeholders dropped (images first is the prompt default);
    placeholders elsewhere stay. Raises ValueError when their count is neither 0 nor one per image."""
    count = question.count(IMAGE_TOKEN)
    if count not in (0, n_images):
        raise ValueError(f"{count} {IMAGE_TOKEN} placeholder(s) for {n_images} image(s)")
    rest = question.lstrip()
    leading = 0
    while rest.startswith(IMAGE_TOKEN):
        rest = rest[len(IMAGE_TOKEN) :].lstrip()
        leading += 1
    return rest.strip() if leading == count else question.strip()


def resolve_source(row: dict, cfg: dict) -> str:
    src = cfg.get("source", cfg["name"])
    if isinstance(src, dict):
        value, _ = pick(row, src.get("column"))
        key = str(value).strip().lower() if value is not None else ""
        if value is not None and not src.get("map"):
            return str(value).strip()  # no map: the column's value is the source
        mapping = {str(k).strip().lower(): v for k, v in (src.get("map") or {}).items()}
        return str(mapping.get(key) or src.get("default") or key or cfg["name"])
    return str(src)


def as_answer(value) -> str:
    if isinstance(value, (list, tuple)):
        return LIST_SEP.join(str(v).strip() for v in value if str(v).strip())
    return str(value).strip()


# ----------------------------------------------------------------------------- images


def kept_image_roots(records: list[dict], image_root: Path) -> list[str]:
    """The folders outside OUT that records keeping their original files point into: the image root
    where it holds them, else each file's folder."""
    base = image_root.resolve()
    outside = {Path(i) for r in records for i in record_images(r) if Path(i).is_absolute()}
    return sorted({str(base if p.is_relative_to(base) else p.parent) for p in outside})


def image_sources(value, image_root: Path, staging: Path) -> list[Path]:
    """Paths of the row's source images, in order (a list value is a multi-view study); embedded bytes
    are staged as files named by their content (so two rows never overwrite each other's)."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ValueError("empty image list")
    out = []
    for k, v in enumerate(values):
        if isinstance(v, dict):
            if v.get("bytes"):
                v = v["bytes"]
            elif v.get("path"):
                v = v["path"]
            else:
                raise ValueError(f"image {k + 1}: dict has neither 'bytes' nor 'path'")
        if isinstance(v, (bytes, bytearray)):
            staging.mkdir(parents=True, exist_ok=True)
            dst = staging / f"{content_hash(bytes(v))}.bin"
            dst.write_bytes(bytes(v))
            out.append(dst)
        elif isinstance(v, str) and v.strip():
            p = Path(v.strip())
            out.append(p if p.is_absolute() else image_root / p)
        else:
            raise ValueError(
                f"image {k + 1}: expected a path, bytes or {{bytes, path}}, got {type(v).__name__}"
            )
    return out


def content_hash(data: bytes | Path) -> str:
    """The hex prefix (80 bits) of the SHA-256 of image bytes (or of a file): its stored copy's name."""
    if isinstance(data, Path):
        with open(data, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()[:HASH_CHARS]
    return hashlib.sha256(data).hexdigest()[:HASH_CHARS]


def stored_name(src: Path) -> str:
    """Where a source image is stored under OUT: named by its content, not by the row id (ids that
    differ only in characters a file name cannot hold, ``case 1`` and ``case/1``, would share one file,
    and a changed image would keep the stale one). By content, distinct images never share a file,
    identical ones are stored once, and a changed image gets a new file. Raises OSError when src is
    unreadable."""
    return f"images/{content_hash(src)}.png"


def previous_images(out: Path) -> dict[str, list[str]]:
    """id -> images of the records an earlier import left in OUT (unreadable lines are skipped: the file
    is about to be replaced, and this only serves to report and tidy what changed). Empty unless OUT's
    ledger says the adapter wrote it: another tool's dataset folder is never tidied."""
    path = out / RECORDS
    try:
        job = str(json.loads((out / "ledger.json").read_text(encoding="utf-8"))["job"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not path.exists() or not job.startswith("adapter:"):
        return {}
    found = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
                found[str(rec["id"])] = [str(i) for i in record_images(rec)]
            except (ValueError, KeyError, TypeError):
                continue
    return found


def replace_previous(out: Path, before: dict[str, list[str]], records: list[dict]) -> dict:
    """Compare a re-import with what OUT held: records whose images changed, and the stored files no
    record uses any more, which are deleted (only files inside OUT/images that the old records named)."""
    now = {r["id"]: [str(i) for i in record_images(r)] for r in records}
    used = {i for images in now.values() for i in images}
    images_dir = (out / "images").resolve()
    removed = 0
    for name in sorted({i for images in before.values() for i in images} - used):
        path = (out / name).resolve()
        if path.is_relative_to(images_dir) and path.is_file():
            path.unlink()
            removed += 1
    return {
        "previous_records": len(before),
        "images_replaced": sum(1 for rid, images in now.items() if rid in before and before[rid] != images),
        "records_added": sum(1 for rid in now if rid not in before),
        "records_dropped": sum(1 for rid in before if rid not in now),
        "stale_images_removed": removed,
    }


def parse_boxes(value, label: str = "finding") -> list[dict]:
    """Boxes as [{"label", "box"}] from a list of dicts or of 4-number lists (or a JSON string)."""
    if isinstance(value, str):
        value = json.loads(value)
    out = []
    for b in value or []:
        if isinstance(b, dict):
            out.append({"label": str(b.get("label") or label), "box": [float(v) for v in b["box"]]})
        else:
            out.append({"label": label, "box": [float(v) for v in b]})
    return out


# ----------------------------------------------------------------------------- adapter


class _Reject(OpenMedixError):
    """A row that does not become a record: its ledger reason and detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass
class _Run:
    """What mapping every row needs: the config's parts and where images are read and staged."""

    cfg: dict
    input_path: Path
    out: Path
    root: Path  # relative image paths start here
    staging: Path  # embedded image bytes: staged for conversion (then dropped), or kept without a frame
    split: str
    constants: dict
    spread: int = 0  # rows whose images all went to their one placeholder (placeholder_policy)

    @property
    def frame(self) -> dict | None:
        return self.cfg.get("frame")

    @property
    def cols(self) -> dict:
        return self.cfg["columns"]


def adapt(
    config: str | Path | dict,
    input_path: str | Path,
    out_dir: str | Path,
    image_root: str | Path | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Convert ``input_path`` per ``config`` into OUT (records, images, frame, ledger)."""
    run = _start(config, input_path, out_dir, image_root)
    ledger = Ledger(f"adapter:{run.cfg['name']}")
    rows = _read_input(run.input_path, ledger)
    seen: set[str] = set()
    pending = [p for num, row in enumerate(rows, 1) if (p := _map_row(row, num, run, ledger, seen))]
    infos = _image_infos(pending, run, workers, progress)
    records = _make_records(pending, infos, run, ledger)
    _write(records, run, ledger)
    return ledger.as_dict()


def _start(config, input_path, out_dir, image_root) -> _Run:
    cfg = load_config(config) if not isinstance(config, dict) else config
    input_path, out = Path(input_path), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if image_root:
        root = Path(image_root).expanduser()
    elif cfg.get("image_root"):
        root = Path(cfg["image_root"]).expanduser()
        root = root if root.is_absolute() else input_path.parent / root
    else:
        root = input_path.parent
    constants = dict(cfg.get("constants") or {})
    split = constants.pop("split", "test")
    staging = out / ("_staged" if cfg.get("frame") else "images")
    return _Run(cfg, input_path, out, root, staging, split, constants)


def _read_input(input_path: Path, ledger: Ledger) -> list:
    """The input's rows; .jsonl lines that are not UTF-8 or not JSON are rejects, the rest goes on."""
    broken: list = []
    rows = read_rows(input_path, broken)
    for lineno, reason in broken:
        ledger.read += 1
        ledger.reject(reason.split(" (")[0], f"{input_path.name}:{lineno}", reason)
    return rows


def _map_row(row, rownum: int, run: _Run, ledger: Ledger, seen: set[str]) -> dict | None:
    """The row's record fields and source images, waiting for the images; None (and a reject) if the
    row is invalid."""
    ledger.read += 1
    where = f"{run.input_path.name}:row {rownum}"
    if not isinstance(row, dict):
        ledger.reject("not an object", where, f"got {type(row).__name__}")
        return None
    try:
        return {"where": where, "row": row, **_row_fields(row, rownum, run, seen)}
    except _Reject as r:
        ledger.reject(r.reason, where, r.detail, row=_jsonable(row))
        return None


def _row_fields(row: dict, rownum: int, run: _Run, seen: set[str]) -> dict:
    """{"srcs", "names", "fields"} of a row, checked in a fixed order (the first failure is the reject's
    reason); raises _Reject."""
    cfg, cols = run.cfg, run.cols
    rid, _ = pick(row, cols.get("id"))
    rid = str(rid).strip() if rid is not None else f"{cfg['name']}-{rownum:06d}"
    if rid in seen:
        raise _Reject("duplicate id", f"id {rid!r} seen before")
    question, answer, image = (pick(row, cols[field])[0] for field in REQUIRED)
    task, task_why = resolve_task(row, cfg["task"], str(question or ""))
    if task is None:
        if task_why:
            raise _Reject("unknown task", f"task value {task_why['task_value']!r} matches no rule")
        detail = f"no task column, and no text rule matches the prompt {first_words(question or '')!r}"
        raise _Reject("unknown task", detail)
    missing = [f for f, v in (("question", question), ("answer", answer), ("image", image)) if v is None]
    if missing:
        raise _Reject(f"missing {missing[0]}", f"no value in columns {cols[missing[0]]}")
    answer = as_answer(answer)
    if not answer:
        raise _Reject("missing answer", "empty answer")
    srcs = _checked(image_sources, "bad image value", (ValueError, TypeError), image, run.root, run.staging)
    spread = spread_placeholder(str(question), len(srcs), run.cfg.get("placeholder_policy", "strict"))
    run.spread += spread != str(question)
    question = _checked(place_images, "image placeholders", (ValueError,), spread, len(srcs))
    row_split = _row_split(row, run)
    meta = {**_row_meta(row, run), "benchmark": cfg["name"], "row": rownum, **task_why}
    meta.update(_meta_columns(row, cfg))
    boxes_value, _ = pick(row, cols.get("boxes"))
    bad_boxes = (ValueError, TypeError, KeyError)
    boxes = _checked(parse_boxes, "bad boxes", bad_boxes, boxes_value) if boxes_value is not None else []
    reasoning, _ = pick(row, cols.get("reasoning"))
    seen.add(rid)  # a valid row's id, even if its images then fail
    fields = {
        "id": rid,
        "source": resolve_source(row, cfg),
        "task": task,
        "question": question,
        "answer": answer,
        "boxes": boxes,
        "patient_id": str(pick(row, cols.get("patient_id"))[0] or rid),
        "study_id": str(pick(row, cols.get("study_id"))[0] or rid),
        "split": row_split,
        "reasoning": str(reasoning) if reasoning is not None else None,
        "meta": meta,
        **run.constants,
    }
    return {"srcs": srcs, "names": _stored_names(srcs, run.frame), "fields": fields}


def _checked(fn, reason: str, errors: tuple[type[Exception], ...], *args):
    """fn(*args), one of ``errors`` becoming a _Reject with ``reason``."""
    try:
        return fn(*args)
    except errors as e:
        raise _Reject(reason, str(e)) from None


def _row_split(row: dict, run: _Run) -> str:
    value, _ = pick(row, run.cols.get("split"))
    split = str(value).strip().lower() if value is not None else run.split
    if split not in SPLITS:
        raise _Reject("unknown split", f"{split!r} is not one of {SPLITS}")
    return split


def _row_meta(row: dict, run: _Run) -> dict:
    """The row's meta column (a dict or JSON text), as a dict."""
    value, _ = pick(row, run.cols.get("meta"))
    try:
        return dict(json.loads(value) if isinstance(value, str) else value or {})
    except (ValueError, TypeError) as e:
        raise _Reject("bad meta", f"not a JSON object: {e}") from None


def _meta_columns(row: dict, cfg: dict) -> dict:
    """The config's ``meta`` keys the row has a value for (numbers and booleans kept, the rest text)."""
    out = {}
    for key, cands in (cfg.get("meta") or {}).items():
        value, _ = pick(row, cands)
        if value is not None:
            out[key] = value if isinstance(value, (int, float, bool)) else str(value)
    return out


def _stored_names(srcs: list[Path], frame: dict | None) -> list[str]:
    """Where the converted images are stored (by content: stored_name says why); none without a frame."""
    try:
        return [stored_name(src) for src in srcs] if frame else []
    except OSError as e:
        reason = "missing image" if isinstance(e, FileNotFoundError) else "unreadable image"
        raise _Reject(reason, f"{e.filename}: {e.strerror}") from None


def _image_infos(pending: list[dict], run: _Run, workers: int, progress: bool) -> list:
    """ImageInfo or ImageError per source image of the pending rows, in order: converted into the model
    frame (cached, parallel; each stored file once), or the originals' sizes without a frame."""
    from tqdm import tqdm

    from data_prep.images import ImagePool

    frame = run.frame
    if frame:
        unique = {name: src for p in pending for src, name in zip(p["srcs"], p["names"])}
        jobs = [(src, run.out / name) for name, src in unique.items()]
    else:
        jobs = [(src, None) for p in pending for src in p["srcs"]]
    with tqdm(total=len(jobs), desc="images", unit="img", disable=not progress) as bar:
        if not frame:
            return _original_sizes([src for src, _ in jobs], bar)
        fam = get_family(frame.get("family"))
        min_px, max_px = int(frame["min_pixels"]), int(frame["max_pixels"])
        with ImagePool(min_px, max_px, workers, factor=fam.factor) as pool:
            done = dict(zip(unique, pool.convert(jobs, progress=bar)))
        return [done[name] for p in pending for name in p["names"]]


def _original_sizes(srcs: list[Path], bar) -> list:
    from PIL import Image

    from data_prep.images import ImageError, ImageInfo

    out: list = []
    for src in srcs:
        try:
            with Image.open(src) as im:
                out.append(ImageInfo(im.width, im.height, im.width, im.height))
        except FileNotFoundError:
            out.append(ImageError("missing image", f"file not found: {src}"))
        except OSError as e:
            out.append(ImageError("unreadable image", f"{src}: {e}"))
        bar.update(1)
    return out


def _make_records(pending: list[dict], infos: list, run: _Run, ledger: Ledger) -> list[dict]:
    """The validated records of the pending rows whose images all converted; the others are rejects."""
    from data_prep.images import ImageError

    records = []
    k = 0
    for p in pending:
        row_infos = infos[k : k + len(p["srcs"])]
        k += len(p["srcs"])
        failed = next((i for i in row_infos if isinstance(i, ImageError)), None)
        if failed is not None:
            ledger.reject(failed.reason, p["where"], str(failed), row=_jsonable(p["row"]))
            continue
        try:
            records.append(make_record(**_with_images(p, row_infos, run)))
        except RecordError as e:
            ledger.reject("invalid record", p["where"], str(e), row=_jsonable(p["row"]))
    if run.frame and run.staging.exists():
        for f in run.staging.iterdir():
            f.unlink()
        run.staging.rmdir()
    return records


def _with_images(p: dict, infos: list, run: _Run) -> dict:
    """The row's fields with its images, their size and its boxes in the stored images' frame."""
    fields = dict(p["fields"])
    if run.frame:
        images = p["names"]
    else:
        out = run.out.resolve()
        images = []
        for src in p["srcs"]:
            src = Path(src).resolve()
            images.append(str(src.relative_to(out)) if src.is_relative_to(out) else str(src))
    fields["image"] = images[0] if len(images) == 1 else images
    info = infos[0]  # boxes lie on the first image
    fields["width"], fields["height"] = info.width, info.height
    if fields["boxes"] and (info.src_w, info.src_h) != (info.width, info.height):
        fields["boxes"] = [
            {
                "label": b["label"],
                "box": scale_box(b["box"], (info.src_w, info.src_h), (info.width, info.height)),
            }
            for b in fields["boxes"]
        ]
    if info.src_w != info.width or info.src_h != info.height:
        fields["meta"]["original_size"] = [info.src_w, info.src_h]
    if len(infos) > 1:
        fields["meta"]["image_sizes"] = [[i.width, i.height] for i in infos]
    return fields


def _write(records: list[dict], run: _Run, ledger: Ledger) -> None:
    """OUT/records.jsonl, frame.json and the ledger; a re-import into the same OUT reports and tidies
    what changed."""
    out, frame = run.out, run.frame
    before = previous_images(out)
    ledger.written = write_jsonl(out / RECORDS, records)
    if frame:
        fam = get_family(frame.get("family"))
        write_frame(out, int(frame["min_pixels"]), int(frame["max_pixels"]), fam.factor, fam.name)
    elif roots := kept_image_roots(records, run.root):
        # the original files stay where they are: let data_prep.io.resolve_image read them there
        atomic_write_text(out / "frame.json", json.dumps({IMAGE_ROOTS: roots}, indent=2) + "\n")
    ledger.extra = {
        "input": str(run.input_path),
        "records_per_task": _counts(r["task"] for r in records),
        "records_per_source": _counts(r["source"] for r in records),
    }
    if run.cfg.get("placeholder_policy") == "images_first":
        ledger.extra["images_at_one_placeholder"] = run.spread
    if before:
        ledger.extra["reimport"] = replace_previous(out, before, records)
    ledger.save(out)
    log.info("%s", ledger.summary())


def _counts(items) -> dict:
    return dict(sorted(Counter(items).items()))


def _jsonable(row: dict) -> dict:
    """The row for rejects.jsonl: image bytes become their size and hash, long texts are cut, so a
    reject stays small (a path, a size or a hash, never the image)."""
    return {str(k): _small(v) for k, v in row.items()}


def _small(v, depth: int = 0):
    if isinstance(v, (bytes, bytearray)):
        return f"<{len(v)} bytes, sha256 {hashlib.sha256(v).hexdigest()[:16]}>"
    if isinstance(v, str):
        return v if len(v) <= REJECT_TEXT_CHARS else f"{v[:REJECT_TEXT_CHARS]}... <{len(v)} chars>"
    if isinstance(v, dict) and depth < 4:
        return {str(k): _small(x, depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple)) and depth < 4:
        items = [_small(x, depth + 1) for x in v[:20]]
        return items + ([f"<{len(v) - 20} more>"] if len(v) > 20 else [])
    if v is None or isinstance(v, (bool, int, float)):
        return v
    return _small(repr(v), depth)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="adapter YAML, e.g. evaluation/adapters/xraybench.yaml")
    ap.add_argument("--input", required=True, help="the benchmark file (.jsonl/.json/.parquet/.csv/.tsv)")
    ap.add_argument("--out", required=True, help="dataset folder to write (records.jsonl, images/, ledger)")
    ap.add_argument("--image_root", help="folder relative image paths start from (overrides the config)")
    ap.add_argument("--workers", type=int, default=1, help="processes for image conversion")
    args = ap.parse_args(argv)
    setup_logging()
    # bad input is one line; OPENMEDIX_DEBUG=1 shows the traceback (data_prep.errors)
    with user_errors("adapter", ConfigError, FileNotFoundError, ValueError):
        adapt(args.config, args.input, args.out, image_root=args.image_root, workers=args.workers)


if __name__ == "__main__":
    main()
