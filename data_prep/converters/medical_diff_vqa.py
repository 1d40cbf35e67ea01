"""Medical-Diff-VQA (mimic_pair_questions.csv) -> VQA records on MIMIC-CXR-JPG images.

Usage:
    python -m data_prep.converters.medical_diff_vqa --root physionet.org/files/medical-diff-vqa/1.0.0 \\
        --mimic_root physionet.org/files/mimic-cxr-jpg/2.1.0 --out data/medical-diff-vqa

Reads mimic_pair_questions.csv (study_id, subject_id, ref_id, question_type, question,
answer, split) and, to find each study's image, mimic_all.csv (study_id, dicom_id, view)
under --root when present, else the MIMIC-CXR-JPG split/metadata CSVs under --mimic_root
(PA, else AP, else another view). Images: files/p1X/p<subject>/s<study>/<dicom_id>.jpg under
--mimic_root (default --root). Split: the CSV's (val -> validation). question_type is kept
in meta; "abnormality" answers (comma lists) become " | " lists. "difference" questions compare
two studies and need both images, which this one-image schema cannot show: they are skipped
(counted) unless --include_difference, which keeps them with the reference study in meta.
"""

from __future__ import annotations

import sys
from pathlib import Path

from data_prep.converters.common import Unit, image_dst, main
from data_prep.converters.mimic_cxr import image_path, read_studies, view_rank
from data_prep.converters.tables import find_file, norm_split, read_csv
from data_prep.labels import base, count, join_list, record

SOURCE = "medical-diff-vqa"
LIST_TYPES = ("abnormality",)
VIEW_NAMES = {"postero-anterior": "PA", "antero-posterior": "AP"}


def add_args(p):
    p.add_argument("--mimic_root", default=None, help="MIMIC-CXR-JPG folder holding files/ (default --root)")
    p.add_argument("--include_difference", action="store_true", help="keep two-image 'difference' questions")


def study_images(root: Path, mimic: Path) -> dict[str, tuple[str, str]]:
    """study_id -> (dicom_id, view) of the image each study is shown with."""
    out: dict[str, tuple[int, str, str]] = {}
    mimic_all = find_file(root, "mimic_all.csv", required=False)
    if mimic_all is not None:
        for _, row in read_csv(mimic_all, ("study_id", "dicom_id")):
            view = VIEW_NAMES.get(row.get("view", ""), row.get("view", ""))
            cand = (view_rank(view), row["dicom_id"], view)
            out[row["study_id"]] = min(out.get(row["study_id"], cand), cand)
    else:
        for (_, study), images in read_studies(mimic).items():
            rank, dicom, view, _ = min(images)
            out[study] = (rank, dicom, view)
    return {k: (v[1], v[2]) for k, v in out.items()}


def units(args, ledger):
    root, mimic = Path(args.root), Path(args.mimic_root or args.root)
    qa = find_file(root, "mimic_pair_questions.csv")
    images = study_images(root, mimic)
    by_study: dict[tuple[str, str], list] = {}
    for line, row in read_csv(qa, ("study_id", "subject_id", "question_type", "question", "answer", "split")):
        ledger.read += 1
        where = f"{qa.name}:{line}"
        if row.get("question_type") == "difference" and not args.include_difference:
            count(ledger, "skipped", "difference question (two images; --include_difference keeps it)")
            continue
        split = norm_split(row.get("split"))
        if split is None or not row.get("question", "").strip() or not row.get("answer", "").strip():
            ledger.reject("incomplete row", where, "split, question or answer missing", row)
            continue
        if row["study_id"] not in images:
            ledger.reject("study without image", where, f"study {row['study_id']} not in the image list", row)
            continue
        keep = {
            k: row.get(k, "")
            for k in ("study_id", "subject_id", "ref_id", "question_type", "question", "answer")
        }
        by_study.setdefault((row["subject_id"], row["study_id"]), []).append((line, split, keep))
    for (subject, study), rows in sorted(by_study.items()):
        dicom, view = images[study]
        dst = image_dst(f"p{subject[:2]}", f"p{subject}", f"s{study}", dicom)
        yield Unit(f"{qa.name}:s{study}", image_path(mimic, subject, study, dicom), dst, (dicom, view, rows))


def records(unit, info, ledger, args):
    dicom, view, rows = unit.data
    out = []
    for line, split, row in rows:
        answer = row["answer"].strip()
        if row["question_type"] in LIST_TYPES:
            answer = join_list(a.strip() for a in answer.split(",") if a.strip())
        meta = {"dicom_id": dicom, "view": view, "line": line}
        if row["question_type"] == "difference":
            meta["ref_study_id"] = row["ref_id"]
        common = base(SOURCE, unit.dst, info, row["subject_id"], row["study_id"], split, meta)
        rid = f"{SOURCE}/{line}"
        out.append(
            record(common, rid, "vqa", row["question"].strip(), answer, question_type=row["question_type"])
        )
    return out


if __name__ == "__main__":
    main(sys.modules[__name__])
