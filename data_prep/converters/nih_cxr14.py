"""NIH ChestX-ray14 -> classification, presence VQA and (for the boxed subset) grounding records.

Usage:
    python -m data_prep.converters.nih_cxr14 --root ChestX-ray14 --out data/nih-cxr14 [--val_fraction 0.1]

Reads Data_Entry_2017_v2020.csv (or Data_Entry_2017.csv; its bracketed headers are repaired,
see tables.fix_headers), BBox_List_2017.csv (x, y, w, h in the 1024 x 1024 PNG frame;
"Infiltrate" there = "Infiltration"), the official train_val_list.txt / test_list.txt, and the
PNGs in images/ or images_0XX/images/. Split: test_list -> test; train_val_list -> train, with
--val_fraction of its patients (by hash) -> validation. Per image: a classification record
(Finding Labels, or "No Finding"), presence questions (yes for each label, no for --negatives
absent ones) and one grounding record per boxed label.
"""

from __future__ import annotations

import sys
from pathlib import Path

from data_prep.converters.common import Unit, image_dst, main
from data_prep.converters.tables import find_file, read_csv, to_float
from data_prep.labels import (
    base,
    classification_record,
    count,
    grounding_record,
    hash_split,
    presence_records,
    stable_hash,
    to_frame,
    xywh_to_xyxy,
)

SOURCE = "nih-cxr14"
LABELS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural Thickening",
    "Pneumonia",
    "Pneumothorax",
)
NO_FINDING = "No Finding"
ALIASES = {"Infiltrate": "Infiltration", "Pleural_Thickening": "Pleural Thickening"}


def add_args(p):
    p.add_argument(
        "--val_fraction", type=float, default=0.1, help="share of train_val patients -> validation"
    )
    p.add_argument("--negatives", type=int, default=2, help="'no' presence questions per image")


def label_name(name: str) -> str:
    name = name.strip()
    return ALIASES.get(name, name)


def read_list(root: Path, name: str) -> set[str]:
    f = find_file(root, name, required=False)
    return set(f.read_text().split()) if f is not None else set()


def read_bboxes(root: Path, ledger) -> dict[str, list]:
    """image -> [(label, [x0, y0, x1, y1], where)]; rows without 4 numbers are rejected."""
    out: dict[str, list] = {}
    f = find_file(root, "BBox_List_2017.csv", required=False)
    if f is None:
        return out
    for line, row in read_csv(f, ("Image Index", "Finding Label", "Bbox [x]", "Bbox [h]")):
        xywh = [to_float(row.get(f"Bbox [{k}]")) for k in "xywh"]
        if None in xywh:
            ledger.reject("missing box", f"{f.name}:{line}", "Bbox [x,y,w,h] not 4 numbers", row)
            continue
        out.setdefault(row["Image Index"], []).append(
            (label_name(row["Finding Label"]), xywh_to_xyxy(*xywh), f"{f.name}:{line}")
        )
    return out


def image_folders(root: Path) -> list[Path]:
    folders = [root / "images", *sorted(root.glob("images_*/images")), *sorted(root.glob("images_*"))]
    return [f for f in folders if f.is_dir()] or [root / "images"]


def units(args, ledger):
    root = Path(args.root)
    test, train_val = read_list(root, "test_list.txt"), read_list(root, "train_val_list.txt")
    boxes = read_bboxes(root, ledger)
    folders = image_folders(root)
    entry = find_file(root, "Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
    for line, row in read_csv(entry, ("Image Index", "Finding Labels", "Patient ID")):
        ledger.read += 1
        where = f"{entry.name}:{line}"
        name = row["Image Index"]
        patient = (
            f"{int(row['Patient ID']):08d}"
            if row.get("Patient ID", "").isdigit()
            else row.get("Patient ID", "")
        )
        if not patient:
            ledger.reject("missing patient id", where, name, row)
            continue
        if name in test:
            split = "test"
        elif name in train_val:
            split = (
                "validation"
                if hash_split(patient, (1 - args.val_fraction, args.val_fraction, 0)) == "validation"
                else "train"
            )
        elif not test and not train_val:
            split = hash_split(patient, salt="nih-cxr14/")
            count(ledger, "skipped", "no official split lists: split by patient hash")
        else:
            ledger.reject("not in split lists", where, name, row)
            continue
        labels = [label_name(x) for x in row["Finding Labels"].split("|") if x.strip()]
        unknown = [x for x in labels if x not in LABELS and x != NO_FINDING]
        if unknown:
            ledger.reject("unknown label", where, ", ".join(unknown), row)
            continue
        src = next((f / name for f in folders if (f / name).exists()), folders[0] / name)
        data = (name, patient, split, [x for x in labels if x != NO_FINDING], row, boxes.get(name, []))
        yield Unit(where, src, image_dst(name), data)


def records(unit, info, ledger, args):
    name, patient, split, labels, row, boxes = unit.data
    meta = {"image_index": name, "view": row.get("View Position"), "follow_up": row.get("Follow-up #")}
    meta["original_dicom_size"] = [row.get("OriginalImage[Width]"), row.get("OriginalImage[Height]")]
    common = base(SOURCE, unit.dst, info, patient, Path(name).stem, split, meta)
    rid = f"{SOURCE}/{Path(name).stem}"
    out = [classification_record(common, rid, labels, (*LABELS, NO_FINDING), NO_FINDING)]
    absent = sorted((x for x in LABELS if x not in labels), key=lambda x: stable_hash(f"{name}/{x}"))
    out += presence_records(
        common, rid, {x: True for x in labels} | {x: False for x in absent[: args.negatives]}
    )
    by_label: dict[str, list] = {}
    for label, box, where in boxes:
        if (b := to_frame(box, info, ledger, where)) is not None:
            by_label.setdefault(label, []).append(b)
    for label, frame_boxes in sorted(by_label.items()):
        slug = label.lower().replace(" ", "_")
        out.append(grounding_record(common, f"{rid}/grounding/{slug}", label, frame_boxes))
    return out


if __name__ == "__main__":
    main(sys.modules[__name__])
