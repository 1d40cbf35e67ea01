"""Map another benchmark's file onto the record schema, driven by a YAML config.

    python -m evaluation.adapter --config evaluation/adapters/xraybench.yaml \\
        --input ~/data/xraybench/test.parquet --out data/xraybench [--image-root DIR] [--workers 2]

Reads JSON / JSONL / Parquet / CSV / TSV rows and, per the config:

  columns:   schema field -> candidate input columns (the first one present and non-empty wins);
             id, question, answer, image are required (id falls back to "<name>-<row>"),
             patient_id / study_id / boxes / width / height are optional
  constants: fixed schema fields (e.g. split: test)
  source:    a constant, or {column: [...], map: {value: source}, default: ...}
  task:      {constant: TASK} or {column: [...], map: {value: task}, contains: [[substring, task]],
             default: TASK or null}: values are matched case-insensitively, exact map first,
             then the first substring rule; no match and no default -> the row is rejected
  meta:      record meta key -> candidate columns (e.g. question_type, which VQA metrics group by)
  image_root: folder that relative image paths are relative to (default: the input's folder;
             --image-root overrides)
  frame:     {min_pixels, max_pixels}: each image is converted once into the model frame
             (data_prep.images, cached) and stored under OUT/images; null keeps the original
             files and reads their size (then the processor resizes at run time and
             reasoning boxes are checked against the original size)

Images may be paths, lists of paths (the first is used; meta.n_images says how many there were),
or embedded bytes ({"bytes": ..., "path": ...} as Hugging Face datasets store them in Parquet).
Invalid rows are not written: they are counted by reason in OUT/ledger.json and kept in
OUT/rejects.jsonl (data_prep.io.Ledger). Output: OUT/records.jsonl (+ images/, frame.json).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections.abc import Iterable
from pathlib import Path

import yaml

from data_prep.frame import scale_box, write_frame
from data_prep.io import RECORDS, Ledger, write_jsonl
from data_prep.schema import LIST_SEP, SPLITS, TASKS, RecordError, make_record

REQUIRED = ("question", "answer", "image")
KNOWN_COLUMNS = ("id", "question", "answer", "image", "patient_id", "study_id", "boxes", "width", "height")


class ConfigError(ValueError):
    """The YAML config is malformed; the message names the key."""


# ----------------------------------------------------------------------------- reading


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a .jsonl / .json / .parquet / .csv / .tsv file as dicts."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        return rows
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
    if not isinstance(task, dict) or not (task.get("constant") or task.get("column")):
        raise ConfigError(
            f"{path}: task needs 'constant: TASK' or 'column: [...]' (+ map / contains / default)"
        )
    for t in _task_targets(task):
        if t not in TASKS:
            raise ConfigError(f"{path}: task maps to unknown task '{t}' (expected one of {', '.join(TASKS)})")
    split = (cfg.get("constants") or {}).get("split", "test")
    if split not in SPLITS:
        raise ConfigError(f"{path}: constants.split '{split}' is not one of {', '.join(SPLITS)}")
    frame = cfg.get("frame")
    if frame is not None and not {"min_pixels", "max_pixels"} <= set(frame):
        raise ConfigError(f"{path}: frame needs min_pixels and max_pixels (or frame: null)")
    return cfg


def _task_targets(task: dict) -> Iterable[str]:
    if task.get("constant"):
        yield task["constant"]
    yield from (task.get("map") or {}).values()
    yield from (t for _, t in (task.get("contains") or []))
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


def resolve_task(row: dict, task_cfg: dict) -> tuple[str | None, object]:
    """(task or None, the raw value it came from)."""
    if task_cfg.get("constant"):
        return task_cfg["constant"], None
    value, _ = pick(row, task_cfg.get("column"))
    key = str(value).strip().lower() if value is not None else ""
    mapping = {str(k).strip().lower(): v for k, v in (task_cfg.get("map") or {}).items()}
    if key in mapping:
        return mapping[key], value
    if key in TASKS:
        return key, value
    for sub, task in task_cfg.get("contains") or []:
        if str(sub).lower() in key:
            return task, value
    return task_cfg.get("default"), value


def resolve_source(row: dict, cfg: dict) -> str:
    src = cfg.get("source", cfg["name"])
    if isinstance(src, dict):
        value, _ = pick(row, src.get("column"))
        key = str(value).strip().lower() if value is not None else ""
        mapping = {str(k).strip().lower(): v for k, v in (src.get("map") or {}).items()}
        return str(mapping.get(key) or src.get("default") or key or cfg["name"])
    return str(src)


def as_answer(value) -> str:
    if isinstance(value, (list, tuple)):
        return LIST_SEP.join(str(v).strip() for v in value if str(v).strip())
    return str(value).strip()


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    return _SAFE.sub("_", text).strip("._")[:120] or "image"


# ----------------------------------------------------------------------------- images


def image_source(value, image_root: Path, staging: Path, stem: str) -> tuple[Path, int]:
    """(path of the source image, how many images the row had); embedded bytes are staged."""
    n = 1
    if isinstance(value, (list, tuple)):
        n = len(value)
        value = value[0]
    if isinstance(value, dict):
        if value.get("bytes"):
            value = value["bytes"]
        elif value.get("path"):
            value = value["path"]
        else:
            raise ValueError("image dict has neither 'bytes' nor 'path'")
    if isinstance(value, (bytes, bytearray)):
        staging.mkdir(parents=True, exist_ok=True)
        dst = staging / f"{stem}.bin"
        dst.write_bytes(bytes(value))
        return dst, n
    p = Path(str(value).strip())
    return (p if p.is_absolute() else image_root / p), n


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


def adapt(
    config: str | Path | dict,
    input_path: str | Path,
    out_dir: str | Path,
    image_root: str | Path | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Convert ``input_path`` per ``config`` into OUT (records, images, frame, ledger)."""
    from tqdm import tqdm

    from data_prep.images import ImageError, ImageInfo, ImagePool

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
    # embedded image bytes: staged for conversion (then dropped), or kept when there is no frame
    staging = out / ("_staged" if cfg.get("frame") else "images")
    cols, constants = cfg["columns"], dict(cfg.get("constants") or {})
    split = constants.pop("split", "test")
    frame = cfg.get("frame")
    ledger = Ledger(f"adapter:{cfg['name']}")
    rows = read_rows(input_path)

    pending: list[dict] = []  # rows that passed the text checks, waiting for their image
    seen: set[str] = set()
    for rownum, row in enumerate(rows, 1):
        ledger.read += 1
        where = f"{input_path.name}:row {rownum}"
        if not isinstance(row, dict):
            ledger.reject("not an object", where, f"got {type(row).__name__}")
            continue
        rid, _ = pick(row, cols.get("id"))
        rid = str(rid).strip() if rid is not None else f"{cfg['name']}-{rownum:06d}"
        if rid in seen:
            ledger.reject("duplicate id", where, f"id {rid!r} seen before", row=_jsonable(row))
            continue
        task, task_value = resolve_task(row, cfg["task"])
        if task is None:
            ledger.reject(
                "unknown task", where, f"task value {task_value!r} matches no rule", row=_jsonable(row)
            )
            continue
        question, _ = pick(row, cols["question"])
        answer, _ = pick(row, cols["answer"])
        image, _ = pick(row, cols["image"])
        missing = [f for f, v in (("question", question), ("answer", answer), ("image", image)) if v is None]
        if missing:
            ledger.reject(
                f"missing {missing[0]}", where, f"no value in columns {cols[missing[0]]}", row=_jsonable(row)
            )
            continue
        answer = as_answer(answer)
        if not answer:
            ledger.reject("missing answer", where, "empty answer", row=_jsonable(row))
            continue
        stem = safe_name(rid)
        try:
            src, n_images = image_source(image, root, staging, stem)
        except (ValueError, TypeError) as e:
            ledger.reject("bad image value", where, str(e), row=_jsonable(row))
            continue
        meta = {"benchmark": cfg["name"], "row": rownum}
        if task_value is not None:
            meta["task_value"] = str(task_value)
        for key, cands in (cfg.get("meta") or {}).items():
            value, _ = pick(row, cands)
            if value is not None:
                meta[key] = value if isinstance(value, (int, float, bool)) else str(value)
        if n_images > 1:
            meta["n_images"] = n_images
        boxes_value, _ = pick(row, cols.get("boxes"))
        try:
            boxes = parse_boxes(boxes_value) if boxes_value is not None else []
        except (ValueError, TypeError, KeyError) as e:
            ledger.reject("bad boxes", where, str(e), row=_jsonable(row))
            continue
        seen.add(rid)
        pending.append(
            {
                "where": where,
                "row": row,
                "src": src,
                "stem": stem,
                "fields": {
                    "id": rid,
                    "source": resolve_source(row, cfg),
                    "task": task,
                    "question": str(question).strip(),
                    "answer": answer,
                    "boxes": boxes,
                    "patient_id": str(pick(row, cols.get("patient_id"))[0] or rid),
                    "study_id": str(pick(row, cols.get("study_id"))[0] or rid),
                    "split": split,
                    "meta": meta,
                    **constants,
                },
            }
        )

    # images: convert into the model frame (cached, parallel) or keep the originals
    infos: list = []
    with tqdm(total=len(pending), desc="images", unit="img", disable=not progress) as bar:
        if frame:
            with ImagePool(int(frame["min_pixels"]), int(frame["max_pixels"]), workers=workers) as pool:
                jobs = [(p["src"], out / "images" / f"{p['stem']}.png") for p in pending]
                infos = pool.convert(jobs, progress=bar)
        else:
            from PIL import Image

            for p in pending:
                try:
                    with Image.open(p["src"]) as im:
                        infos.append(ImageInfo(im.width, im.height, im.width, im.height))
                except FileNotFoundError:
                    infos.append(ImageError("missing image", f"file not found: {p['src']}"))
                except OSError as e:
                    infos.append(ImageError("unreadable image", f"{p['src']}: {e}"))
                bar.update(1)

    records = []
    for p, info in zip(pending, infos):
        if isinstance(info, ImageError):
            ledger.reject(info.reason, p["where"], str(info), row=_jsonable(p["row"]))
            continue
        fields = dict(p["fields"])
        if frame:
            fields["image"] = f"images/{p['stem']}.png"
        else:
            src = Path(p["src"]).resolve()
            inside = src.is_relative_to(out.resolve())
            fields["image"] = str(src.relative_to(out.resolve())) if inside else str(src)
        fields["width"], fields["height"] = info.width, info.height
        if fields["boxes"]:
            fields["boxes"] = [
                {
                    "label": b["label"],
                    "box": scale_box(b["box"], (info.src_w, info.src_h), (info.width, info.height)),
                }
                for b in fields["boxes"]
            ]
        if info.src_w != info.width or info.src_h != info.height:
            fields["meta"]["original_size"] = [info.src_w, info.src_h]
        try:
            records.append(make_record(**fields))
        except RecordError as e:
            ledger.reject("invalid record", p["where"], str(e), row=_jsonable(p["row"]))
    if frame and staging.exists():
        for f in staging.iterdir():
            f.unlink()
        staging.rmdir()

    ledger.written = write_jsonl(out / RECORDS, records)
    if frame:
        write_frame(out, int(frame["min_pixels"]), int(frame["max_pixels"]))
    ledger.extra = {
        "input": str(input_path),
        "records_per_task": _counts(r["task"] for r in records),
        "records_per_source": _counts(r["source"] for r in records),
    }
    ledger.save(out)
    if progress:
        print(ledger.summary())
    return ledger.as_dict()


def _counts(items) -> dict:
    out: dict = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return dict(sorted(out.items()))


def _jsonable(row: dict) -> dict:
    """The row for rejects.jsonl: embedded image bytes replaced by their size."""
    out = {}
    for k, v in row.items():
        if isinstance(v, (bytes, bytearray)):
            v = f"<{len(v)} bytes>"
        elif isinstance(v, dict) and isinstance(v.get("bytes"), (bytes, bytearray)):
            v = {**v, "bytes": f"<{len(v['bytes'])} bytes>"}
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            v = repr(v)
        out[k] = v
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="adapter YAML, e.g. evaluation/adapters/xraybench.yaml")
    ap.add_argument("--input", required=True, help="the benchmark file (.jsonl/.json/.parquet/.csv/.tsv)")
    ap.add_argument("--out", required=True, help="dataset folder to write (records.jsonl, images/, ledger)")
    ap.add_argument("--image-root", help="folder relative image paths start from (overrides the config)")
    ap.add_argument("--workers", type=int, default=1, help="processes for image conversion")
    args = ap.parse_args(argv)
    try:
        adapt(args.config, args.input, args.out, image_root=args.image_root, workers=args.workers)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"adapter: {e}") from None


if __name__ == "__main__":
    main()
