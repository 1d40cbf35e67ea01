"""VinDr-CXR (DICOM + per-reader box annotations) -> grounding, classification, presence VQA.

Usage:
    python -m data_prep.converters.vindr_cxr --root physionet.org/files/vindr-cxr/1.0.0 --out data/vindr-cxr

Reads the PhysioNet release (annotations/annotations_{train,test}.csv: image_id, rad_id,
class_name, x_min, y_min, x_max, y_max; images {train,test}/<image_id>.dicom) or, when that
is absent, the Kaggle release (train.csv with class_id as well; images train/<image_id>.dicom).
Boxes are in original DICOM pixels. Several readers annotate each image: per class, boxes of
different readers overlapping with IoU >= --iou are merged into their mean box, kept when
drawn by at least --min_readers readers. Per image: one grounding record per class present
(answer: its boxes), one classification record (present classes, or "No finding"), and
presence questions (yes for each present class, no for --negatives absent classes).
Split: the release's train / test. VinDr-CXR publishes no patient ids: each image is its own
patient.
"""

from __future__ import annotations

import sys
from pathlib import Path

from data_prep.converters.common import Unit, image_dst, main
from data_prep.converters.tables import find_file, read_csv, to_float
from data_prep.labels import (
    base,
    classification_record,
    grounding_record,
    merge_boxes,
    presence_records,
    stable_hash,
    to_frame,
)

SOURCE = "vindr-cxr"
LESIONS = (
    "Aortic enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Consolidation",
    "ILD",
    "Infiltration",
    "Lung Opacity",
    "Nodule/Mass",
    "Other lesion",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary fibrosis",
)
NO_FINDING = "No finding"


def add_args(p):
    p.add_argument("--iou", type=float, default=0.4, help="IoU linking boxes of different readers")
    p.add_argument("--min_readers", type=int, default=1, help="readers needed for a merged box to count")
    p.add_argument("--negatives", type=int, default=2, help="'no' presence questions per image")


def annotation_files(root: Path) -> list[tuple[Path, str]]:
    physionet = [
        (find_file(root / "annotations", f"annotations_{s}.csv", required=False), s)
        for s in ("train", "test")
    ]
    physionet = [(f, s) for f, s in physionet if f is not None] if (root / "annotations").is_dir() else []
    return physionet or [(find_file(root, "train.csv"), "train")]


def units(args, ledger):
    root = Path(args.root)
    for csv_file, split in annotation_files(root):
        images: dict[str, list] = {}
        for line, row in read_csv(csv_file, ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max")):
            ledger.read += 1
            where = f"{csv_file.name}:{line}"
            name = (row.get("class_name") or "").strip()
            if name == NO_FINDING:
                images.setdefault(row["image_id"], [])
                continue
            box = [to_float(row.get(k)) for k in ("x_min", "y_min", "x_max", "y_max")]
            if name not in LESIONS:
                ledger.reject("unknown class", where, repr(name), row)
            elif None in box:
                ledger.reject("missing box", where, f"{name} without coordinates", row)
            else:
                images.setdefault(row["image_id"], []).append((name, box, row.get("rad_id", ""), where))
        for image_id in sorted(images):
            dicom = root / split / f"{image_id}.dicom"
            if not dicom.exists() and (root / split / f"{image_id}.dcm").exists():
                dicom = root / split / f"{image_id}.dcm"
            yield Unit(
                f"{split}/{image_id}", dicom, image_dst(split, image_id), (image_id, split, images[image_id])
            )


def records(unit, info, ledger, args):
    image_id, split, annotations = unit.data
    by_class: dict[str, list] = {}
    for name, box, reader, where in annotations:
        if to_frame(box, info, ledger, where) is not None:  # validity checked on the raw box
            by_class.setdefault(name, []).append((box, reader))
    readers = sorted({a[2] for a in annotations})
    common = base(
        SOURCE, unit.dst, info, image_id, image_id, split, {"image_id": image_id, "readers": readers}
    )
    rid = f"{SOURCE}/{image_id}"
    out, present = [], []
    for name in LESIONS:
        kept = []  # (box in the model frame, number of readers who drew it)
        for box, who in merge_boxes(by_class.get(name, []), args.iou):
            if len(who) >= args.min_readers and (b := to_frame(box, info, ledger, f"{unit.where} {name}")):
                kept.append((b, len(who)))
        if kept:
            present.append(name)
            slug = name.lower().replace(" ", "_").replace("/", "_")
            rec = grounding_record(common, f"{rid}/grounding/{slug}", name, [b for b, _ in kept])
            rec["meta"]["box_readers"] = [n for _, n in kept]
            out.append(rec)
    out.append(classification_record(common, rid, present, (*LESIONS, NO_FINDING), NO_FINDING))
    absent = sorted((n for n in LESIONS if n not in present), key=lambda n: stable_hash(f"{image_id}/{n}"))
    known = {n: True for n in present} | {n: False for n in absent[: args.negatives]}
    return out + presence_records(common, rid, known)


if __name__ == "__main__":
    main(sys.modules[__name__])
