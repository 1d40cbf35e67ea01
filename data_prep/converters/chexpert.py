"""CheXpert (train.csv / valid.csv) -> classification and presence-VQA records.

Usage:
    python -m data_prep.converters.chexpert --root CheXpert-v1.0-small --out data/chexpert [--views frontal]

Reads train.csv and valid.csv (in --root, or in a CheXpert-v1.0* folder under it) and the
images they name: Path = CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,
resolved next to the CSV's folder. Splits: train -> train, valid -> validation (the official
ones; the hidden test set has no public labels here). Patient = patient00001, study =
patient00001/study1. Per image (frontal views only unless --views all): one classification
record and one presence question per labelled observation, with the same label rules as
MIMIC-CXR (1 yes, 0 no, -1 per --uncertain, blank no question; see labels.chexpert_records).
"""

from __future__ import annotations

import sys
from pathlib import Path, PurePosixPath

from data_prep.converters.common import Unit, image_dst, main
from data_prep.converters.tables import find_file, read_csv
from data_prep.labels import base, chexpert_codes, chexpert_records, count

SOURCE = "chexpert"
CSVS = (("train.csv", "train"), ("valid.csv", "validation"))


def add_args(p):
    p.add_argument("--views", choices=("frontal", "all"), default="frontal")
    p.add_argument("--uncertain", choices=("skip", "positive", "negative"), default="skip")


def resolve(csv_dir: Path, rel: str) -> Path:
    """Path column -> file: relative to the CSV folder's parent, or to the CSV folder itself."""
    p = PurePosixPath(rel)
    first = csv_dir.parent / p
    return first if first.exists() else csv_dir.joinpath(*p.parts[1:])


def units(args, ledger):
    root = Path(args.root)
    for name, split in CSVS:
        csv_file = find_file(root, name, required=split == "train")
        if csv_file is None:
            continue
        for line, row in read_csv(csv_file, ("Path", "Frontal/Lateral")):
            ledger.read += 1
            parts = PurePosixPath(row["Path"]).parts
            if len(parts) < 4 or not parts[-3].startswith("patient"):
                ledger.reject("bad path", f"{csv_file.name}:{line}", row["Path"], row)
                continue
            view = (row.get("Frontal/Lateral") or "").strip()
            if args.views == "frontal" and view.lower() != "frontal":
                count(ledger, "skipped", "lateral view (use --views all)")
                continue
            patient, study, image = parts[-3], parts[-2], parts[-1]
            data = (patient, f"{patient}/{study}", split, chexpert_codes(row), row)
            dst = image_dst(split, patient, study, image)
            yield Unit(f"{csv_file.name}:{line}", resolve(csv_file.parent, row["Path"]), dst, data)


def records(unit, info, ledger, args):
    patient, study, split, codes, row = unit.data
    meta = {"path": row["Path"], "view": row.get("Frontal/Lateral"), "ap_pa": row.get("AP/PA")}
    meta.update(sex=row.get("Sex"), age=row.get("Age"))
    common = base(SOURCE, unit.dst, info, patient, study, split, meta)
    rid = f"{SOURCE}/{Path(unit.dst).with_suffix('').relative_to('images')}"
    return chexpert_records(common, rid, codes, args.uncertain, ledger)


if __name__ == "__main__":
    main(sys.modules[__name__])
