"""Labels and boxes -> schema records: question templates, splits, box handling.

Shared by every converter so that the same kind of label always becomes the same kind of
record:

* reports   -> ``report_findings`` / ``report_impression`` (answer = the section text)
* labels    -> ``classification`` (answer = the present findings joined with " | ", or the
               dataset's normal label) and presence ``vqa`` (answer "yes" / "no")
* boxes     -> ``grounding`` (answer = the boxes as text "[x0, y0, x1, y1] | ...", the same
               boxes in the record's ``boxes``, all in the model frame)

Question texts are simple templates, picked deterministically from the record id, so a
rerun gives identical records.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter

from data_prep.frame import scale_box
from data_prep.images import ImageInfo
from data_prep.io import Ledger
from data_prep.schema import LIST_SEP
from rewards.boxes import components, iou
from rewards.parsing import format_box
from rewards.report_labels import CHEXPERT_OBSERVATIONS

# The 14 CheXpert observations, in the label files' column order (one list with the report labeler).
CHEXPERT_LABELS = CHEXPERT_OBSERVATIONS
NO_FINDING = "No Finding"

FINDINGS_QUESTIONS = (
    "Describe the findings in this chest X-ray.",
    "Write the FINDINGS section of the radiology report for this chest X-ray.",
    "What are the radiological findings in this chest radiograph?",
    "Generate the findings of a radiology report for this image.",
)
IMPRESSION_QUESTIONS = (
    "Write the IMPRESSION section of the radiology report for this chest X-ray.",
    "What is the impression for this chest radiograph?",
    "Summarise this chest X-ray as a radiology report impression.",
    "Give the radiologist's impression of this chest X-ray.",
)
CLASSIFICATION_QUESTIONS = (
    "Which of the following findings are present in this chest X-ray: {options}? List all that apply.",
    "Classify this chest X-ray. Options: {options}. Give every finding that is present.",
    "From the list {options}, which findings does this chest radiograph show?",
)
PRESENCE_QUESTIONS = (
    "Is there {finding} in this chest X-ray?",
    "Does this chest X-ray show {finding}?",
    "Is {finding} present in this image?",
    "Is there evidence of {finding} on this chest radiograph?",
)
GROUNDING_QUESTIONS = (
    "Locate the {label} in this chest X-ray. Give each region as a bounding box [x_min, y_min, x_max, y_max].",
    "Where is the {label} in this image? Answer with bounding boxes.",
    "Find every region of {label} in this chest radiograph and give their bounding boxes.",
)
PHRASE_QUESTIONS = (
    'Locate the region described by "{phrase}" in this chest X-ray. Give its bounding box.',
    'Ground this phrase in the image: "{phrase}". Answer with bounding boxes [x_min, y_min, x_max, y_max].',
    'Where in this chest X-ray is "{phrase}"? Give the bounding box.',
)


def stable_hash(key: str) -> int:
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big")


def pick(templates: tuple[str, ...], key: str) -> str:
    """One template, chosen by the key (deterministic across runs and machines)."""
    return templates[stable_hash(key) % len(templates)]


def hash_split(patient_id: str, fractions=(0.7, 0.1, 0.2), salt: str = "") -> str:
    """A patient-level split for datasets without an official one: train / validation / test."""
    u = (stable_hash(salt + patient_id) % 1_000_000) / 1_000_000
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "validation"
    return "test"


def finding_text(label: str) -> str:
    """Label as it reads inside a sentence: "Pleural Effusion" -> "pleural effusion", "ILD" stays."""
    return " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in label.split())


def join_list(items) -> str:
    return LIST_SEP.join(items)


# ------------------------------------------------------------------------------ records


def base(source: str, image: str, info: ImageInfo, patient_id, study_id, split: str, meta=None) -> dict:
    """The fields every record of one image shares."""
    meta = dict(meta or {})
    meta.setdefault("orig_size", [info.src_w, info.src_h])
    return {
        "source": source,
        "image": image,
        "width": info.width,
        "height": info.height,
        "patient_id": str(patient_id),
        "study_id": str(study_id),
        "split": split,
        "meta": meta,
    }


def record(common: dict, rid: str, task: str, question: str, answer: str, boxes=None, **meta) -> dict:
    rec = {
        "id": rid,
        "task": task,
        "question": question,
        "answer": answer,
        "boxes": boxes or [],
        "reasoning": None,
        **common,
    }
    rec["meta"] = {**(common.get("meta") or {}), **meta}
    return rec


def report_records(common: dict, rid: str, findings: str | None, impression: str | None) -> list[dict]:
    """report_findings / report_impression records for the non-empty sections."""
    out = []
    if findings and findings.strip():
        q = pick(FINDINGS_QUESTIONS, rid + "/findings")
        out.append(record(common, f"{rid}/findings", "report_findings", q, findings.strip()))
    if impression and impression.strip():
        q = pick(IMPRESSION_QUESTIONS, rid + "/impression")
        out.append(record(common, f"{rid}/impression", "report_impression", q, impression.strip()))
    return out


def classification_record(
    common: dict, rid: str, present: list[str], options: tuple[str, ...] | list[str], normal: str
) -> dict:
    """Multi-label classification; ``options`` lists the labels (``normal`` included)."""
    q = pick(CLASSIFICATION_QUESTIONS, rid).format(options=", ".join(options))
    answer = join_list(present) if present else normal
    return record(
        common, f"{rid}/classification", "classification", q, answer, question_type="classification"
    )


def presence_records(common: dict, rid: str, labels: dict[str, bool]) -> list[dict]:
    """One yes/no question per label whose presence is known."""
    out = []
    for label, present in labels.items():
        q = pick(PRESENCE_QUESTIONS, f"{rid}/{label}").format(finding=finding_text(label))
        slug = label.lower().replace(" ", "_").replace("/", "_")
        out.append(
            record(
                common,
                f"{rid}/presence/{slug}",
                "vqa",
                q,
                "yes" if present else "no",
                question_type="presence",
                finding=label,
            )
        )
    return out


def grounding_record(
    common: dict, rid: str, label: str, boxes: list[list], phrase: str | None = None
) -> dict:
    """Boxes (already in the model frame) of one label or phrase."""
    if phrase:
        q = pick(PHRASE_QUESTIONS, rid).format(phrase=phrase)
    else:
        q = pick(GROUNDING_QUESTIONS, rid).format(label=finding_text(label))
    answer = join_list(format_box(b) for b in boxes)
    return record(
        common,
        rid,
        "grounding",
        q,
        answer,
        boxes=[{"label": label, "box": list(b)} for b in boxes],
        question_type="grounding",
    )


def count(ledger: Ledger, key: str, reason: str, n: int = 1) -> None:
    """Count something skipped on purpose (not an error) under ledger.extra[key][reason]."""
    ledger.extra.setdefault(key, Counter())[reason] += n


LABEL_CODES = {"1.0": "1", "1": "1", "0.0": "0", "0": "0", "-1.0": "u", "-1": "u", "": "."}


def chexpert_codes(row: dict) -> str:
    """One code per CHEXPERT_LABELS entry: 1 positive, 0 negative, u uncertain (-1), . blank."""
    return "".join(LABEL_CODES.get((row.get(lab) or "").strip(), ".") for lab in CHEXPERT_LABELS)


def chexpert_records(common: dict, rid: str, codes: str | None, uncertain: str, ledger: Ledger) -> list[dict]:
    """Presence VQA + classification from CheXpert/NegBio codes (MIMIC-CXR, CheXpert).

    1 -> yes, 0 -> no, blank -> no question; uncertain (-1) follows ``uncertain``
    (skip / positive / negative). The classification answer lists the positives, or
    "No Finding" when that label is 1; a study with neither gets no classification record
    (counted in ledger.extra).
    """
    if codes is None:
        count(ledger, "skipped", "no label row for the study")
        return []
    as_value = {"1": True, "0": False, "u": {"skip": None, "positive": True, "negative": False}[uncertain]}
    pairs = list(zip(CHEXPERT_LABELS, codes))
    known = {lab: as_value[c] for lab, c in pairs if lab != NO_FINDING and as_value.get(c) is not None}
    meta = {**(common.get("meta") or {}), "uncertain": [lab for lab, c in pairs if c == "u"]}
    common = {**common, "meta": meta}
    out = presence_records(common, rid, known)
    present = [lab for lab, v in known.items() if v]
    if present or codes[CHEXPERT_LABELS.index(NO_FINDING)] == "1":
        out.append(classification_record(common, rid, present, CHEXPERT_LABELS, NO_FINDING))
    else:
        count(ledger, "skipped", "classification: no positive label and No Finding not 1")
    return out


# -------------------------------------------------------------------------------- boxes


def xywh_to_xyxy(x, y, w, h) -> list[float]:
    return [x, y, x + w, y + h]


def to_frame(box, info: ImageInfo, ledger: Ledger, where: str, tol: float = 1.0) -> list[int] | None:
    """A box in original pixels -> the model frame, or None after counting why it was rejected.

    Rejected: non-finite or degenerate boxes, boxes reaching outside the original image by more
    than ``tol`` pixels, boxes that vanish (under one pixel) after the resize. Overhangs within
    ``tol`` are clipped.
    """
    vals = list(box) if box is not None else []
    if len(vals) != 4 or any(v is None or not math.isfinite(v) for v in vals):
        ledger.reject("invalid box", where, f"box {vals!r}")
        return None
    x0, y0, x1, y1 = vals
    if x0 >= x1 or y0 >= y1:
        ledger.reject("degenerate box", where, f"box {vals} has no area")
        return None
    if x0 < -tol or y0 < -tol or x1 > info.src_w + tol or y1 > info.src_h + tol:
        ledger.reject("box outside image", where, f"box {vals} outside the {info.src_w}x{info.src_h} image")
        return None
    out = scale_box([x0, y0, x1, y1], (info.src_w, info.src_h), (info.width, info.height))
    if out[0] >= out[2] or out[1] >= out[3]:
        ledger.reject("box too small after resize", where, f"box {vals} -> {out}")
        return None
    return out


def merge_boxes(
    boxes: list[tuple[list[float], str]], iou_thr: float = 0.4
) -> list[tuple[list[float], list[str]]]:
    """Merge boxes of one label drawn by several readers.

    ``boxes`` holds (box, reader). Boxes overlapping with IoU >= ``iou_thr`` are linked (single
    linkage); each group becomes the coordinate-wise mean box plus the readers who drew it.
    Groups come out sorted by (y_min, x_min).
    """
    ids = components(len(boxes), lambda i, j: iou(boxes[i][0], boxes[j][0]) >= iou_thr)
    groups: dict[int, list[int]] = {}
    for i, root in enumerate(ids):
        groups.setdefault(root, []).append(i)
    out = []
    for members in groups.values():
        coords = [boxes[i][0] for i in members]
        mean = [sum(c[k] for c in coords) / len(coords) for k in range(4)]
        out.append((mean, sorted({boxes[i][1] for i in members})))
    return sorted(out, key=lambda g: (g[0][1], g[0][0]))
