"""Reading the datasets' CSV files: plain, .gz or .zip; odd headers; row numbers for errors.

Every reader streams (one row at a time) and yields ``(line_number, row_dict)`` so a bad row
can be named in a ledger. Headers are cleaned with :func:`fix_headers`, which also repairs
headers whose bracketed names hold commas (NIH ChestX-ray14's
``OriginalImage[Width,Height]`` and ``Bbox [x,y,w,h]``).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import zipfile
from collections.abc import Iterator
from pathlib import Path

from data_prep.errors import OpenMedixError


class MissingColumnsError(OpenMedixError, ValueError):
    """A dataset file lacks a column the converter reads: the user's to fix (common.main prints it as
    one line: the file, the missing columns, the columns found)."""


def find_file(root: str | Path, *names: str, required: bool = True) -> Path | None:
    """The first of ``names`` (each also tried with .gz / .zip, and one folder level down) under root."""
    root = Path(root)
    for name in names:
        for cand in (name, name + ".gz", name + ".zip"):
            for p in (root / cand, *sorted(root.glob(f"*/{cand}"))):
                if p.is_file():
                    return p
    if required:
        raise FileNotFoundError(f"none of {', '.join(names)} (or .gz/.zip) found under {root}")
    return None


def open_text(path: str | Path):
    """A text handle on a plain, gzip or single-member zip file."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    if path.suffix == ".zip":
        zf = zipfile.ZipFile(path)
        members = [n for n in zf.namelist() if not n.endswith("/")]
        return io.TextIOWrapper(zf.open(members[0]), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def fix_headers(header: list[str]) -> list[str]:
    """Strip names; split bracketed groups a plain CSV reader cut at their commas.

    ``["OriginalImage[Width", "Height]"]`` -> ``["OriginalImage[Width]", "OriginalImage[Height]"]``;
    ``["Bbox [x", "y", "w", "h]"]`` -> ``["Bbox [x]", "Bbox [y]", "Bbox [w]", "Bbox [h]"]``.
    Trailing empty names are dropped.
    """
    out: list[str] = []
    prefix = None
    for cell in (c.strip() for c in header):
        if prefix is None and "[" in cell and "]" not in cell:
            prefix, first = cell.split("[", 1)
            out.append(f"{prefix}[{first.strip()}]")
        elif prefix is not None:
            closing = cell.endswith("]")
            out.append(f"{prefix}[{cell.rstrip(']').strip()}]")
            if closing:
                prefix = None
        else:
            out.append(cell)
    while out and not out[-1]:
        out.pop()
    return out


def read_csv(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict]]:
    """Yield (line number, row) with cleaned headers; extra empty cells are ignored.

    ``required`` columns missing from the header raise MissingColumnsError naming the file, the
    missing columns and the columns the header has.
    """
    with open_text(path) as f:
        reader = csv.reader(f)
        try:
            header = fix_headers(next(reader))
        except StopIteration:
            header = []
        if missing := [c for c in required if c not in header]:
            found = ", ".join(repr(c) for c in header) if header else "none, the file is empty"
            raise MissingColumnsError(
                f"{path}: missing column(s) {', '.join(missing)} (columns found: {found})"
            )
        if not header:
            return
        n = len(header)
        for row in reader:
            if not row or not any(c.strip() for c in row):
                continue
            cells = [c.strip() for c in row[:n]] + [""] * (n - len(row))
            yield reader.line_num, dict(zip(header, cells))


def to_float(value: str | None) -> float | None:
    """A finite float, or None for a blank / non-numeric / non-finite cell."""
    if value is None or str(value).strip() == "":
        return None
    try:
        v = float(value)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def norm_split(value: str | None) -> str | None:
    """Official split names -> train / validation / test (None when unknown)."""
    v = (value or "").strip().lower()
    return {
        "train": "train",
        "training": "train",
        "validate": "validation",
        "validation": "validation",
        "valid": "validation",
        "val": "validation",
        "dev": "validation",
        "test": "test",
        "testing": "test",
    }.get(v)
