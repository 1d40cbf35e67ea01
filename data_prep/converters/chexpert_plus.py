"""CheXpert Plus (df_chexpert_plus_240401.csv) -> report_findings / report_impression records.

Usage:
    python -m data_prep.converters.chexpert_plus --root chexpert_plus --out data/chexpert-plus [--images DIR]

Reads df_chexpert_plus_*.csv (its section_findings / section_impression columns are the
report sections) and, for each study, one frontal image (the first frontal row of the study;
a lateral only when the study has no frontal). path_to_image (train/patient42142/study5/
view1_frontal.jpg) is looked up under --images (default --root) as given, with .png, and under
PNG/ or CheXpert-v1.0/. Split: the CSV's split column (train, valid -> validation). Patient
and study ids follow CheXpert (patient42142, patient42142/study5), so the mixture's leak check
spans both datasets.
"""

from __future__ import annotations

import sys
from pathlib import Path, PurePosixPath

from data_prep.converters.common import Unit, image_dst, main
from data_prep.converters.reports import clean
from data_prep.converters.tables import find_file, norm_split, read_csv
from data_prep.labels import base, report_records

SOURCE = "chexpert-plus"
CSV_NAMES = ("df_chexpert_plus_240401.csv", "df_chexpert_plus.csv")


def add_args(p):
    p.add_argument("--images", default=None, help="folder the image paths are relative to (default --root)")


def find_image(images: Path, rel: str) -> Path:
    p = PurePosixPath(rel)
    for prefix in ("", "PNG", "CheXpert-v1.0", "CheXpert-v1.0-small"):
        for cand in (p, p.with_suffix(".png"), p.with_suffix(".jpg")):
            full = images / prefix / cand
            if full.exists():
                return full
    return images / p


def units(args, ledger):
    root = Path(args.root)
    images = Path(args.images or root)
    csv_file = find_file(root, *CSV_NAMES, required=False) or next(
        iter(sorted(root.glob("df_chexpert_plus*.csv*"))), None
    )
    if csv_file is None:
        raise FileNotFoundError(f"no df_chexpert_plus_*.csv under {root}")
    primary: dict[str, tuple[int, str]] = {}  # pass 1: the image each study keeps
    for _, row in read_csv(csv_file, ("path_to_image", "frontal_lateral", "split")):
        parts = PurePosixPath(row["path_to_image"]).parts
        if len(parts) >= 3:
            study = f"{parts[-3]}/{parts[-2]}"
            rank = 0 if (row.get("frontal_lateral") or "").lower() == "frontal" else 1
            primary[study] = min(primary.get(study, (9, "")), (rank, row["path_to_image"]))
    for line, row in read_csv(csv_file):  # pass 2: stream the rows of those images
        ledger.read += 1
        where = f"{csv_file.name}:{line}"
        parts = PurePosixPath(row["path_to_image"]).parts
        if len(parts) < 3:
            ledger.reject("bad path", where, row["path_to_image"], {"path_to_image": row["path_to_image"]})
            continue
        patient, study = parts[-3], f"{parts[-3]}/{parts[-2]}"
        if primary.get(study, (0, ""))[1] != row["path_to_image"]:
            continue  # another image of a study already covered
        split = norm_split(row.get("split"))
        if split is None:
            ledger.reject(
                "unknown split", where, repr(row.get("split")), {"path_to_image": row["path_to_image"]}
            )
            continue
        findings, impression = (
            clean(row.get("section_findings", "")),
            clean(row.get("section_impression", "")),
        )
        if not findings and not impression:
            ledger.reject("empty report", where, "no section_findings or section_impression")
            continue
        meta = {"path": row["path_to_image"], "view": row.get("frontal_lateral"), "ap_pa": row.get("ap_pa")}
        meta["deid_patient_id"] = row.get("deid_patient_id")
        data = (patient, study, split, findings, impression, meta)
        yield Unit(where, find_image(images, row["path_to_image"]), image_dst(*parts[-4:]), data)


def records(unit, info, ledger, args):
    patient, study, split, findings, impression, meta = unit.data
    common = base(SOURCE, unit.dst, info, patient, study, split, meta)
    return report_records(common, f"{SOURCE}/{study}", findings, impression)


if __name__ == "__main__":
    main(sys.modules[__name__])
