"""Reading and writing records: JSONL with row-numbered errors, atomic writes, ledgers."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from data_prep.schema import RecordError, record_images, validate_record

RECORDS = "records.jsonl"


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temp file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Atomically write rows as JSON lines; returns the count."""
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    return len(lines)


def iter_jsonl(path: str | Path, broken: list | None = None) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object). A line that is not valid JSON (e.g. a writer killed mid-line)
    raises naming the file and line, or, given a ``broken`` list, is appended to it as
    (line number, reason) and skipped."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                if broken is None:
                    raise RecordError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
                broken.append((lineno, f"not valid JSON ({e.msg})"))
                continue
            yield lineno, obj


def read_records(path: str | Path, split: str | None = None, validate: bool = True) -> list[dict]:
    """Records of a dataset folder (or a .jsonl file), optionally one split, validated."""
    path = Path(path)
    file = path / RECORDS if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(
            f"{file} not found. Make a dataset first, e.g. `python -m data_prep.phantom --out {path}`."
        )
    out = []
    for lineno, rec in iter_jsonl(file):
        if validate:
            try:
                validate_record(rec)
            except RecordError as e:
                raise RecordError(f"{file}:{lineno} (id={rec.get('id')!r}): {e}") from None
        if split is None or rec.get("split") == split:
            out.append(rec)
    return out


def resolve_image(dataset_dir: str | Path, image: str) -> Path:
    """Absolute path of a record's image (relative paths are relative to the dataset folder)."""
    p = Path(image)
    return p if p.is_absolute() else Path(dataset_dir) / p


def image_paths(dataset_dir: str | Path, rec: dict) -> list[Path]:
    """Every image of a record, resolved (one for a single-image record)."""
    return [resolve_image(dataset_dir, i) for i in record_images(rec)]


def map_images(rec: dict, fn: Callable[[str], str]) -> dict:
    """A copy of ``rec`` with ``fn`` applied to each image path (a str stays a str, a list a list)."""
    image = rec["image"]
    return {**rec, "image": fn(image) if isinstance(image, str) else [fn(i) for i in image]}


class Ledger:
    """Counts what a batch job read, wrote and rejected (by reason), and keeps the rejects."""

    def __init__(self, name: str):
        self.name = name
        self.read = 0
        self.written = 0
        self.rejected: Counter[str] = Counter()
        self.rejects: list[dict] = []
        self.extra: dict = {}

    def reject(self, reason: str, where: str, detail: str = "", row: dict | None = None) -> None:
        self.rejected[reason] += 1
        self.rejects.append({"reason": reason, "where": where, "detail": detail, "row": row})

    def as_dict(self) -> dict:
        return {
            "job": self.name,
            "read": self.read,
            "written": self.written,
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(self.rejected),
            **self.extra,
        }

    def save(self, out_dir: str | Path) -> None:
        out_dir = Path(out_dir)
        atomic_write_text(out_dir / "ledger.json", json.dumps(self.as_dict(), indent=2) + "\n")
        write_jsonl(out_dir / "rejects.jsonl", self.rejects)

    def summary(self) -> str:
        lines = [
            f"[{self.name}] read {self.read}, written {self.written}, rejected {sum(self.rejected.values())}"
        ]
        for reason, n in self.rejected.most_common():
            lines.append(f"    rejected {n:>6}  {reason}")
        for k, v in self.extra.items():
            lines.append(f"    {k}: {v}")
        return "\n".join(lines)
