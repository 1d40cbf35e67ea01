"""MS-CXR (phrase grounding on MIMIC-CXR images) -> grounding records.

Usage:
    python -m data_prep.converters.ms_cxr --root physionet.org/files/ms-cxr/1.1.0 \\
        --mimic_root physionet.org/files/mimic-cxr-jpg/2.1.0 --out data/ms-cxr

Reads MS_CXR_Local_Alignment_v1.1.0.csv (or v1.0.0): dicom_id, category_name, label_text,
path, x, y, w, h, image_width, image_height[, split]; boxes x, y, w, h in original MIMIC-CXR
pixels. Images: `path` (files/p1X/p.../s.../<dicom_id>.jpg) under --mimic_root (default
--root). Per image and phrase: one grounding record (question quotes the phrase; label = the
category). When the JPG's size differs from image_width/height, boxes are scaled from the
declared size. Split: the CSV's split column (val -> validation); without it, a hash of the
patient. Patient / study ids are MIMIC's, so the mixture's leak check spans both.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from data_prep.converters.common import Unit, image_dst, main
from data_prep.converters.tables import find_file, norm_split, read_csv, to_float
from data_prep.labels import base, count, grounding_record, hash_split, to_frame, xywh_to_xyxy

SOURCE = "ms-cxr"
CSV_NAMES = ("MS_CXR_Local_Alignment_v1.1.0.csv", "MS_CXR_Local_Alignment_v1.0.0.csv")


def add_args(p):
    p.add_argument("--mimic_root", default=None, help="MIMIC-CXR-JPG folder holding files/ (default --root)")


def ids_from_path(path: str) -> tuple[str, str]:
    subject = re.search(r"/p(\d{8})/", "/" + path)
    study = re.search(r"/s(\d{8})/", "/" + path)
    return (subject.group(1) if subject else "", study.group(1) if study else "")


def units(args, ledger):
    root = Path(args.root)
    mimic = Path(args.mimic_root or root)
    csv_file = find_file(root, *CSV_NAMES)
    images: dict[str, dict] = {}
    for line, row in read_csv(
        csv_file, ("dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h")
    ):
        ledger.read += 1
        where = f"{csv_file.name}:{line}"
        vals = [to_float(row.get(k)) for k in ("x", "y", "w", "h", "image_width", "image_height")]
        subject, study = ids_from_path(row.get("path", ""))
        if None in vals[:4]:
            ledger.reject("missing box", where, "x, y, w, h not 4 numbers", row)
            continue
        if not subject or not study:
            ledger.reject("bad path", where, repr(row.get("path")), row)
            continue
        if not row.get("label_text", "").strip():
            ledger.reject("empty phrase", where, "label_text is empty", row)
            continue
        img = images.setdefault(
            row["dicom_id"], {"row": row, "subject": subject, "study": study, "phrases": {}}
        )
        declared = (vals[4], vals[5]) if vals[4] and vals[5] else None
        phrase = img["phrases"].setdefault((row["category_name"], row["label_text"].strip()), [])
        phrase.append((xywh_to_xyxy(*vals[:4]), declared, where))
    for dicom_id in sorted(images):
        img = images[dicom_id]
        rel = img["row"]["path"]
        src = (
            mimic / rel
            if (mimic / rel).exists() or not (mimic / "files" / rel).exists()
            else mimic / "files" / rel
        )
        dst = image_dst(f"p{img['subject']}", f"s{img['study']}", dicom_id)
        yield Unit(f"{csv_file.name}:{dicom_id}", src, dst, (dicom_id, img))


def records(unit, info, ledger, args):
    dicom_id, img = unit.data
    split = norm_split(img["row"].get("split"))
    if split is None:
        split = hash_split(img["subject"], salt="mimic/")
        count(ledger, "skipped", "no split column: split by patient hash")
    common = base(SOURCE, unit.dst, info, img["subject"], img["study"], split, {"dicom_id": dicom_id})
    out = []
    for i, ((category, phrase), boxes) in enumerate(sorted(img["phrases"].items())):
        frame_boxes = []
        for box, declared, where in boxes:
            if declared and (round(declared[0]), round(declared[1])) != (info.src_w, info.src_h):
                sx, sy = info.src_w / declared[0], info.src_h / declared[1]
                box = [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]  # no clipping: checked below
                count(ledger, "notes", "boxes rescaled: image size differs from image_width/height")
            if (b := to_frame(box, info, ledger, where)) is not None:
                frame_boxes.append(b)
        if frame_boxes:
            rec = grounding_record(common, f"{SOURCE}/{dicom_id}/{i}", category, frame_boxes, phrase=phrase)
            rec["meta"].update(category=category, phrase=phrase)
            out.append(rec)
    return out


if __name__ == "__main__":
    main(sys.modules[__name__])
