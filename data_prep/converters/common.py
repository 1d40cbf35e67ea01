"""What every converter shares: the command line, the streaming run loop, the ledger.

A converter module defines

    SOURCE = "nih-cxr14"
    def add_args(parser): ...                       # its own options (optional)
    def units(args, ledger) -> Iterator[Unit]:      # one Unit per image, ledger.read += 1 each
    def records(unit, info, ledger, args) -> list[dict]   # the records of that image

and ends with ``if __name__ == "__main__": main(sys.modules[__name__])``.

The loop takes units a bounded batch at a time, converts their images in parallel
(:class:`data_prep.images.ImagePool`, cached), turns each into records in the model frame,
validates every record and streams it to ``OUT/records.jsonl`` (written to a temp file and
renamed at the end). Memory therefore does not grow with the number of records. A unit whose
image is missing or unreadable, a record that fails validation, and whatever the converter
rejects are counted in the ledger by reason: ``OUT/ledger.json`` + ``OUT/rejects.jsonl``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data_prep.converters.tables import MissingColumnsError
from data_prep.errors import setup_logging, user_errors
from data_prep.families import DEFAULT_FAMILY, FAMILIES, get_family
from data_prep.frame import PAPER_MAX_PIXELS, QWEN_MIN_PIXELS, frame_rule, read_frame, write_frame
from data_prep.images import ImageError, ImageInfo, ImagePool
from data_prep.io import RECORDS, Ledger
from data_prep.schema import RecordError, validate_record

log = logging.getLogger(__name__)


@dataclass
class Unit:
    """One source image and what its records are built from."""

    where: str  # names the input in ledger entries (file, or file:line)
    src: Path  # the original image file
    dst: str  # stored image, relative to OUT (e.g. "images/p10/p10000032/s5.../x.png")
    data: Any = field(default=None)
    # further views of the study (src, dst), e.g. the lateral: converted too; the unit's records then
    # hold [dst, *their dsts] as ``image`` (boxes stay on the first)
    extra: list[tuple[Path, str]] = field(default_factory=list)


def image_dst(*parts: str) -> str:
    """The stored image's relative path: images/<parts...> with a .png suffix."""
    rel = Path("images", *parts)
    return str(rel.with_suffix(".png"))


class RecordWriter:
    """Streams JSON lines to a temp file; ``commit`` renames it into place (atomic)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.f = open(self.tmp, "w", encoding="utf-8")
        self.count = 0

    def write(self, rec: dict) -> None:
        self.f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.count += 1

    def commit(self) -> None:
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)


def parser_for(source: str, description: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m data_prep.{source.replace('-', '_')}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--root", required=True, help="the dataset as downloaded (official layout)")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--min_pixels", type=int, default=QWEN_MIN_PIXELS, help="processor min_pixels")
    p.add_argument("--max_pixels", type=int, default=PAPER_MAX_PIXELS, help="processor max_pixels")
    p.add_argument(
        "--family",
        choices=list(FAMILIES),
        default=DEFAULT_FAMILY,
        help="model family (its image side multiple)",
    )
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="image worker processes")
    p.add_argument("--limit", type=int, default=None, help="convert only the first N images (units)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="a traceback instead of a one-line error")
    return p


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds of this process, of its finished children) so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def peak_rss_mb() -> dict:
    """Peak resident memory of this process and of its largest (finished) child, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"main": round(own, 1), "largest_worker": round(kids, 1)}


def run(
    source: str,
    units: Iterable[Unit],
    build: Callable[[Unit, ImageInfo, Ledger], Iterable[dict]],
    out: str | Path,
    ledger: Ledger,
    min_pixels: int = QWEN_MIN_PIXELS,
    max_pixels: int = PAPER_MAX_PIXELS,
    workers: int = 1,
    limit: int | None = None,
    progress: bool = True,
    total: int | None = None,
    family: str | None = None,
) -> Ledger:
    """Convert ``units`` into OUT (records.jsonl, images/, frame.json, ledger.json, rejects.jsonl)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fam = get_family(family)
    old = read_frame(out)
    if old and frame_rule(old) != (min_pixels, max_pixels, fam.factor):
        log.warning("%s was prepared for another frame (%s); its images will be converted again", out, old)
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    if limit is not None:
        units = itertools.islice(units, limit)
        total = min(total, limit) if total is not None else limit
    sink = _Sink(RecordWriter(out / RECORDS), build, ledger)
    bar = tqdm(total=total, unit="img", desc=source, disable=not progress, mininterval=1.0)
    try:
        with ImagePool(min_pixels, max_pixels, workers, factor=fam.factor) as pool:
            image_seconds = _convert(units, pool, out, sink, bar, batch_size=max(64, 32 * workers))
        sink.writer.commit()
    except BaseException:
        sink.writer.abort()
        raise
    finally:
        bar.close()
    write_frame(out, min_pixels, max_pixels, fam.factor, fam.name)
    cpu = [round(b - a, 2) for a, b in zip(cpu0, cpu_seconds())]  # workers: counted once they exit
    ledger.written = sink.writer.count
    ledger.extra.update(
        {
            "source": source,
            "records_by_task": dict(sorted(sink.tasks.items())),
            "records_by_split": dict(sorted(sink.splits.items())),
            "images": dict(sink.images),
            "seconds": round(time.perf_counter() - t0, 2),
            "image_seconds": round(image_seconds, 2),
            "cpu_seconds": {"main": cpu[0], "workers": cpu[1]},
            "peak_rss_mb": peak_rss_mb(),
            "frame": {"min_pixels": min_pixels, "max_pixels": max_pixels},
        }
    )
    ledger.save(out)
    log.info("%s", ledger.summary())
    return ledger


def _convert(units: Iterable[Unit], pool: ImagePool, out: Path, sink: _Sink, bar, batch_size: int) -> float:
    """Convert the units' images a batch at a time, building the records of one batch while the workers
    convert the next; returns the seconds spent waiting for images."""
    image_seconds = 0.0
    it = iter(units)
    pending = None  # (units, handle): the batch the workers are converting
    while True:
        batch = list(itertools.islice(it, batch_size))
        jobs = [(src, out / dst) for u in batch for src, dst in [(u.src, u.dst), *u.extra]]
        handle = pool.submit(jobs) if batch else None
        if pending is not None:
            t_img = time.perf_counter()
            results = pool.collect(pending[1], progress=bar)
            image_seconds += time.perf_counter() - t_img
            sink.finish(pending[0], results)
        if not batch:
            return image_seconds
        pending = (batch, handle)


class _Sink:
    """Turns converted units into validated records, streamed to the writer and counted."""

    def __init__(self, writer: RecordWriter, build: Callable, ledger: Ledger):
        self.writer, self.build, self.ledger = writer, build, ledger
        self.tasks: Counter[str] = Counter()
        self.splits: Counter[str] = Counter()
        self.images: Counter[str] = Counter()

    def finish(self, batch: list[Unit], flat: list) -> None:
        """The records of a batch of units, given their images' results (the unit's first, then its
        extra views', unit after unit)."""
        k = 0
        for unit in batch:
            results = flat[k : k + 1 + len(unit.extra)]
            k += len(results)
            failed = next((r for r in results if isinstance(r, ImageError)), None)
            if failed is not None:
                self.ledger.reject(failed.reason, unit.where, str(failed))
                continue
            self.images.update("cached" if r.cached else "converted" for r in results)
            try:
                recs = list(self.build(unit, results[0], self.ledger))
            except Exception as e:  # one odd input must not stop a day-long job
                self.ledger.reject("converter error", unit.where, f"{type(e).__name__}: {e}")
                continue
            if unit.extra:
                views = [unit.dst] + [dst for _, dst in unit.extra]
                recs = [{**rec, "image": views} for rec in recs]
            for rec in recs:
                self.write(rec, unit)

    def write(self, rec: dict, unit: Unit) -> None:
        try:
            validate_record(rec)
        except RecordError as e:
            self.ledger.reject("invalid record", unit.where, f"{rec.get('id')}: {e}")
            return
        self.writer.write(rec)
        self.tasks[rec["task"]] += 1
        self.splits[rec["split"]] += 1


def main(module, argv: list[str] | None = None) -> Ledger:
    """The command line of a converter module (see the module docstring)."""
    parser = parser_for(module.SOURCE, module.__doc__)
    if hasattr(module, "add_args"):
        module.add_args(parser)
    args = parser.parse_args(argv)
    setup_logging()
    root = Path(args.root)
    if not root.is_dir():
        parser.error(f"--root {root} is not a folder")
    ledger = Ledger(module.SOURCE)
    # a CSV without a column the converter reads, or a file the layout lacks: one line, no traceback
    # (raised while the units stream, so the whole run is covered)
    with user_errors(module.SOURCE, MissingColumnsError, FileNotFoundError, debug=args.debug):
        units: Iterator[Unit] = module.units(args, ledger)
        total = len(units) if hasattr(units, "__len__") else None
        return run(
            module.SOURCE,
            units,
            lambda unit, info, led: module.records(unit, info, led, args),
            args.out,
            ledger,
            min_pixels=args.min_pixels,
            max_pixels=args.max_pixels,
            workers=args.workers,
            limit=args.limit,
            progress=not args.no_progress,
            total=total,
            family=args.family,
        )
