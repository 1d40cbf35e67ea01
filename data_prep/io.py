"""Reading and writing records: JSONL with row-numbered errors, atomic writes, ledgers."""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from data_prep.errors import OpenMedixError
from data_prep.frame import IMAGE_ROOTS
from data_prep.schema import RecordError, record_images, validate_record

RECORDS = "records.jsonl"
IMAGE_ROOTS_ENV = "OPENMEDIX_IMAGE_ROOTS"
OUTSIDE = "image outside the dataset folder"
log = logging.getLogger(__name__)


class DatasetNotFoundError(OpenMedixError, FileNotFoundError):
    """A dataset folder without its records file: the message says how to make one."""


class ImagePathError(RecordError):
    """A record names an image outside the folders its dataset may read (``resolve_image``)."""


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


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Append rows as JSON lines and fsync: a job killed mid-write loses at most this batch, and a
    reader that drops a torn last line (the resume logs here do) sees every row written before."""
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def iter_jsonl(path: str | Path, broken: list | None = None) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object). A line that is not valid UTF-8 or not valid JSON (e.g. a writer
    killed mid-line) raises naming the file and line, or, given a ``broken`` list, is appended to it as
    (line number, reason) and skipped."""
    # Bytes, decoded line by line: a bad byte then costs its own line, not the whole file.
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                obj = json.loads(line)
            except UnicodeDecodeError as e:
                reason = f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
            except json.JSONDecodeError as e:
                reason = f"not valid JSON ({e.msg})"
            else:
                yield lineno, obj
                continue
            if broken is None:
                raise RecordError(f"{path}:{lineno}: {reason}") from None
            broken.append((lineno, reason))


def read_resume_log(path: str | Path, valid=lambda row: True, repair: bool = False) -> list[dict]:
    """The rows of an append-only JSONL log (``append_jsonl``) that a resumed job continues. A line that
    does not parse or fails ``valid`` (a write killed mid-line) is dropped, and its work is redone; with
    ``repair`` the file is rewritten without it, so the next append starts on a line of its own."""
    path = Path(path)
    if not path.exists():
        return []
    broken: list = []
    rows = [row for _, row in iter_jsonl(path, broken)]
    good = [row for row in rows if isinstance(row, dict) and valid(row)]
    dropped = len(broken) + len(rows) - len(good)
    if repair and (dropped or not path.read_bytes().endswith(b"\n")):
        write_jsonl(path, good)
    if dropped:
        log.warning(
            "%s: dropped %d broken line(s) (an interrupted write); their work is redone", path, dropped
        )
    return good


def read_records(path: str | Path, split: str | None = None, validate: bool = True) -> list[dict]:
    """Records of a dataset folder (or a .jsonl file), optionally one split, validated."""
    path = Path(path)
    file = path / RECORDS if path.is_dir() else path
    if not file.exists():
        raise DatasetNotFoundError(
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


def image_roots(dataset_dir: str | Path, env: bool = True) -> list[Path]:
    """The folders a dataset's images may lie in, resolved: the dataset folder itself, the folders its
    ``frame.json`` lists under ``"image_roots"`` (written by data_prep.mixture and the cold-start
    synthesis, whose records point into their source folders; relative entries are relative to the
    dataset folder) and, with ``env``, the folders named in the environment variable
    ``OPENMEDIX_IMAGE_ROOTS`` (``os.pathsep``-separated, e.g. ``/data/mimic-cxr:/data/vindr``): the
    way to let a hand-made dataset point at images kept elsewhere. ``env=False`` gives what a dataset
    derived from this one must record (the user's variable is not written into files)."""
    dataset_dir = Path(dataset_dir)
    roots = [dataset_dir.resolve(), *_frame_roots(dataset_dir)]
    if env:
        roots += [Path(p).resolve() for p in os.environ.get(IMAGE_ROOTS_ENV, "").split(os.pathsep) if p]
    return list(dict.fromkeys(roots))


def _frame_roots(dataset_dir: Path) -> tuple[Path, ...]:
    frame_file = dataset_dir / "frame.json"
    try:
        st = frame_file.stat()
    except FileNotFoundError:
        return ()
    return _read_frame_roots(str(dataset_dir.resolve()), (st.st_mtime_ns, st.st_ino, st.st_size))


@functools.lru_cache(maxsize=64)
def _read_frame_roots(dataset_dir: str, stamp: tuple) -> tuple[Path, ...]:
    # Cached per frame.json version: resolve_image runs once per image of every record.
    # Read raw, not through read_frame: a frame.json may hold image roots and no frame.
    file = Path(dataset_dir) / "frame.json"
    try:
        listed = json.loads(file.read_text(encoding="utf-8")).get(IMAGE_ROOTS, [])
    except (ValueError, AttributeError) as e:
        raise RecordError(f"{file}: not a JSON object ({e}); write it again or delete it") from None
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        raise RecordError(f"{file}: '{IMAGE_ROOTS}' must be a list of folder paths, got {listed!r}")
    return tuple((Path(dataset_dir) / p).resolve() for p in listed)


def resolve_image(dataset_dir: str | Path, image: str, roots: list[Path] | None = None) -> Path:
    """The real path of a record's image (relative paths are relative to the dataset folder).

    A record must never make us read (or send to a teacher API) a file it merely names, such as
    ``/etc/passwd`` or ``../../secrets``: the path is resolved (symlinks and ``..`` followed) and must
    lie inside the dataset folder or one of ``roots`` (default: ``image_roots(dataset_dir)``, which
    includes the folders in ``$OPENMEDIX_IMAGE_ROOTS``); otherwise ``ImagePathError``.
    """
    path = Path(image)
    path = path if path.is_absolute() else Path(dataset_dir) / path
    real = path.resolve()
    roots = image_roots(dataset_dir) if roots is None else roots
    if not any(real.is_relative_to(root) for root in roots):
        log.warning("refused image %r of dataset %s: it resolves to %s", image, dataset_dir, real)
        raise ImagePathError(
            f"{OUTSIDE}: {image!r} resolves to {real}, which is not under {Path(dataset_dir).resolve()} "
            f"or an allowed image root. Move the image into the dataset folder, or, if you trust the "
            f"data, add its folder to ${IMAGE_ROOTS_ENV} (a cold-start set or mixture whose frame.json "
            f"lists no image roots: run its command again)."
        )
    return real


def image_paths(dataset_dir: str | Path, rec: dict, roots: list[Path] | None = None) -> list[Path]:
    """Every image of a record, resolved and confined (``resolve_image``); one for a single-image
    record. An image outside raises ``ImagePathError`` naming the dataset folder and the record id."""
    roots = image_roots(dataset_dir) if roots is None else roots
    try:
        return [resolve_image(dataset_dir, i, roots) for i in record_images(rec)]
    except ImagePathError as e:
        raise ImagePathError(f"{dataset_dir} (id={rec.get('id')!r}): {e}") from None


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
            if isinstance(v, Counter):  # printed as the plain dict it is in ledger.json
                v = dict(v)
            if isinstance(v, list) and len(v) > 10:  # e.g. failed ids: the ledger file holds them all
                v = f"{v[:10]} ... ({len(v)} in all)"
            lines.append(f"    {k}: {v}")
        return "\n".join(lines)
