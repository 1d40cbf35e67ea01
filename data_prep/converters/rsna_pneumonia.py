"""RSNA Pneumonia Detection -> grounding, presence VQA and classification records.

Usage:
    python -m data_prep.converters.rsna_pneumonia --root rsna-pneumonia-detection-challenge --out data/rsna-pneumonia

Reads stage_2_train_labels.csv (patientId, x, y, width, height, Target: one row per box,
Target 0 rows have no box), optionally stage_2_detailed_class_info.csv (Lung Opacity /
No Lung Opacity / Not Normal / Normal), and the DICOMs stage_2_train_images/<patientId>.dcm
(1024 x 1024). Per image: a grounding record for the pneumonia boxes (Target 1), a yes/no
pneumonia question, and a three-way classification when the class file is present. The
stage-2 test labels were never released: patients are split 70/10/20 by a hash of the id.
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
    hash_split,
    presence_records,
    to_frame,
)

SOURCE = "rsna-pneumonia"
CLASSES = ("Lung Opacity", "No Lung Opacity / Not Normal", "Normal")
LABEL = "Pneumonia"


def units(args, ledger):
    root = Path(args.root)
    labels = find_file(root, "stage_2_train_labels.csv", "stage_1_train_labels.csv")
    classes: dict[str, str] = {}
    info_file = find_file(root, "stage_2_detailed_class_info.csv", required=False)
    if info_file is not None:
        classes = {row["patientId"]: row["class"] for _, row in read_csv(info_file, ("patientId", "class"))}
    images: dict[str, list] = {}
    for line, row in read_csv(labels, ("patientId", "x", "y", "width", "height", "Target")):
        ledger.read += 1
        where = f"{labels.name}:{line}"
        pid, target = row["patientId"], row.get("Target", "").strip()
        xywh = [to_float(row.get(k)) for k in ("x", "y", "width", "height")]
        if target == "1" and None in xywh:
            ledger.reject("missing box", where, "Target 1 without x, y, width, height", row)
        elif target == "1":
            images.setdefault(pid, []).append(
                ([xywh[0], xywh[1], xywh[0] + xywh[2], xywh[1] + xywh[3]], where)
            )
        elif target == "0":
            images.setdefault(pid, [])
        else:
            ledger.reject("bad target", where, repr(target), row)
    folder = next(
        (root / d for d in ("stage_2_train_images", "stage_1_train_images") if (root / d).is_dir()),
        root / "stage_2_train_images",
    )
    for pid in sorted(images):
        data = (pid, images[pid], classes.get(pid))
        yield Unit(f"{folder.name}/{pid}.dcm", folder / f"{pid}.dcm", image_dst(pid), data)


def records(unit, info, ledger, args):
    pid, boxes, cls = unit.data
    split = hash_split(pid, salt="rsna-pneumonia/")
    common = base(SOURCE, unit.dst, info, pid, pid, split, {"patientId": pid, "class": cls})
    rid = f"{SOURCE}/{pid}"
    frame_boxes = [b for b in (to_frame(box, info, ledger, where) for box, where in boxes) if b is not None]
    if boxes and not frame_boxes:
        return []  # every box rejected (counted): a yes/no answer would contradict the labels
    out = presence_records(common, rid, {LABEL: bool(frame_boxes)})
    if frame_boxes:
        out.append(grounding_record(common, f"{rid}/grounding", LABEL, frame_boxes))
    if cls in CLASSES:
        out.append(classification_record(common, rid, [cls], CLASSES, "Normal"))
    return out


if __name__ == "__main__":
    main(sys.modules[__name__])
