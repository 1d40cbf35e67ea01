"""MIMIC-CXR-JPG (+ MIMIC-CXR reports) -> report, classification and presence-VQA records.

Usage:
    python -m data_prep.converters.mimic_cxr --root physionet.org/files/mimic-cxr-jpg/2.1.0 \\
        --reports physionet.org/files/mimic-cxr/2.1.0 --out data/mimic-cxr [--labels chexpert]

Reads, under --root: mimic-cxr-2.0.0-split.csv(.gz) (official split, validate -> validation),
mimic-cxr-2.0.0-metadata.csv(.gz) (ViewPosition, Rows, Columns), the label file
mimic-cxr-2.0.0-{chexpert,negbio}.csv(.gz) and the images
files/p10/p10000032/s50414267/<dicom_id>.jpg; under --reports (default: --root):
files/p10/p10000032/s50414267.txt.

``--views frontal`` (default): one image per study (PA, else AP, else another frontal view, else
lateral). ``--views frontal+lateral``: the frontal image and, where the study has one, a lateral
(LATERAL, else LL) as a second image of every record of the study; boxes (none here) would lie on the
frontal. Studies without a lateral keep one image and are counted in the ledger. Per study:
report_findings / report_impression (sections by the dataset's own parser rules, see
data_prep.converters.reports), one multi-label classification record (positives joined with " | ", or
"No Finding") and one yes/no presence question per labelled observation (1 -> yes, 0 -> no;
-1 uncertain follows --uncertain, default skip; blank = not mentioned -> no question).
"""

from __future__ import annotations

import sys
from pathlib import Path

from data_prep.converters.common import Unit, image_dst, main
from data_prep.converters.reports import findings_impression
from data_prep.converters.tables import find_file, norm_split, read_csv
from data_prep.labels import base, chexpert_codes, chexpert_records, report_records

SOURCE = "mimic-cxr"
VIEW_ORDER = ("PA", "AP", "AP AXIAL", "PA LLD", "AP LLD", "PA RLD", "AP RLD", "LATERAL", "LL", "LAO", "RAO")
LATERAL_VIEWS = ("LATERAL", "LL")


def add_args(p):
    p.add_argument("--reports", default=None, help="MIMIC-CXR folder holding files/pXX/pID/sID.txt")
    p.add_argument("--labels", choices=("chexpert", "negbio"), default="chexpert")
    p.add_argument("--uncertain", choices=("skip", "positive", "negative"), default="skip")
    p.add_argument(
        "--views",
        choices=("frontal", "frontal+lateral"),
        default="frontal",
        help="images per study: the best frontal, or the frontal and a lateral as two images",
    )


def view_rank(view: str) -> int:
    v = (view or "").upper()
    return VIEW_ORDER.index(v) if v in VIEW_ORDER else len(VIEW_ORDER)


def image_path(root: Path, subject: str, study: str, dicom: str) -> Path:
    return root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"


def read_studies(root: Path, ledger=None) -> dict[tuple[str, str], list[tuple[int, str, str, str]]]:
    """(subject, study) -> [(view rank, dicom, view, split)] from the official split + metadata CSVs."""
    views: dict[str, str] = {}
    meta = find_file(root, "mimic-cxr-2.0.0-metadata.csv", required=False)
    if meta is not None:
        for _, row in read_csv(meta, ("dicom_id", "ViewPosition")):
            views[row["dicom_id"]] = sys.intern(row.get("ViewPosition", ""))
    studies: dict[tuple[str, str], list] = {}
    split_file = find_file(root, "mimic-cxr-2.0.0-split.csv")
    for line, row in read_csv(split_file, ("dicom_id", "study_id", "subject_id", "split")):
        split = norm_split(row.get("split"))
        if split is None:
            if ledger is not None:
                ledger.reject("unknown split", f"{split_file.name}:{line}", repr(row.get("split")), row)
            continue
        view = views.get(row["dicom_id"], "")
        key = (row["subject_id"], row["study_id"])
        studies.setdefault(key, []).append((view_rank(view), row["dicom_id"], view, split))
    return studies


def read_labels(root: Path, which: str) -> dict[str, str]:
    """study_id -> label codes (see labels.chexpert_codes)."""
    out = {}
    for _, row in read_csv(find_file(root, f"mimic-cxr-2.0.0-{which}.csv"), ("study_id",)):
        out[row["study_id"]] = chexpert_codes(row)
    return out


def units(args, ledger):
    root = Path(args.root)
    reports = Path(args.reports or root)
    reports = reports / "files" if (reports / "files").is_dir() else reports
    studies = read_studies(root, ledger)
    labels = read_labels(root, args.labels)
    for (subject, study), images in sorted(studies.items()):
        ledger.read += 1
        _, dicom, view, split = min(images)
        report = reports / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
        extra, views = [], view
        if args.views == "frontal+lateral" and view.upper() not in LATERAL_VIEWS:
            laterals = sorted(i for i in images if i[2].upper() in LATERAL_VIEWS)
            if laterals:
                _, lat, lat_view, _ = laterals[0]
                lat_dst = image_dst(f"p{subject[:2]}", f"p{subject}", f"s{study}", lat)
                extra = [(image_path(root, subject, study, lat), lat_dst)]
                views = f"{view}+{lat_view}"
            else:
                ledger.extra["studies_without_lateral"] = ledger.extra.get("studies_without_lateral", 0) + 1
        data = (subject, study, dicom, views, split, report, labels.get(study))
        dst = image_dst(f"p{subject[:2]}", f"p{subject}", f"s{study}", dicom)
        yield Unit(f"p{subject}/s{study}", image_path(root, subject, study, dicom), dst, data, extra)


def records(unit: Unit, info, ledger, args) -> list[dict]:
    subject, study, dicom, view, split, report, codes = unit.data
    common = base(SOURCE, unit.dst, info, subject, study, split, {"dicom_id": dicom, "view": view})
    rid = f"{SOURCE}/s{study}"
    out = []
    if not report.is_file():
        ledger.reject("missing report", str(report), "report file not found")
    else:
        text = report.read_text(encoding="utf-8", errors="replace")
        findings, impression = findings_impression(text)
        if not text.strip():
            ledger.reject("empty report", str(report), "the report file is empty")
        elif not findings and not impression:
            ledger.reject("no findings/impression", str(report), "no FINDINGS or IMPRESSION section text")
        out += report_records(common, rid, findings, impression)
    common["meta"]["labeler"] = args.labels
    return out + chexpert_records(common, rid, codes, args.uncertain, ledger)


if __name__ == "__main__":
    main(sys.modules[__name__])
