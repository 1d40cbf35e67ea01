"""MIMIC-CXR-VQA (dataset/{train,valid,test}.json) -> VQA records on MIMIC-CXR-JPG images.

Usage:
    python -m data_prep.converters.mimic_cxr_vqa --root mimiccxrvqa \\
        --mimic_root physionet.org/files/mimic-cxr-jpg/2.1.0 --out data/mimic-cxr-vqa

Reads the answered release files train.json / valid.json / test.json (under --root,
--root/dataset or --root/*/dataset): each a list of {split, idx, image_id, question,
content_type, semantic_type, template, template_arguments, answer, subject_id, study_id,
image_path}. Images: image_path under --mimic_root (default --root), also tried under files/,
else built from the ids. The answer (a string or a list) becomes " | "-joined text; an empty
list becomes "none" (counted). Split: the file (valid -> validation). Question types
(content_type, semantic_type, template) are kept in meta.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from data_prep.converters.common import Unit, image_dst, main
from data_prep.converters.mimic_cxr import image_path
from data_prep.converters.tables import norm_split
from data_prep.labels import base, count, join_list, record

SOURCE = "mimic-cxr-vqa"
FILES = (("train.json", "train"), ("valid.json", "validation"), ("test.json", "test"))


def add_args(p):
    p.add_argument("--mimic_root", default=None, help="MIMIC-CXR-JPG folder holding files/ (default --root)")


def find_json(root: Path, name: str) -> Path | None:
    for cand in (root / name, root / "dataset" / name, *sorted(root.glob(f"*/dataset/{name}"))):
        if cand.is_file():
            return cand
    return None


def resolve_image(mimic: Path, q: dict) -> Path:
    rel = str(q.get("image_path") or "").lstrip("/")
    for cand in (mimic / rel, mimic / "files" / rel) if rel else ():
        if cand.is_file():
            return cand
    subject, study = str(q.get("subject_id", "")), str(q.get("study_id", ""))
    return image_path(mimic, subject, study, str(q.get("image_id")))


def answer_text(answer) -> str:
    if isinstance(answer, list):
        return join_list(str(a).strip() for a in answer if str(a).strip())
    return str(answer if answer is not None else "").strip()


def units(args, ledger):
    root, mimic = Path(args.root), Path(args.mimic_root or args.root)
    found = [(find_json(root, name), split) for name, split in FILES]
    if not any(f for f, _ in found):
        raise FileNotFoundError(
            f"no train.json / valid.json / test.json under {root} (or its dataset/ folder)"
        )
    for path, file_split in found:
        if path is None:
            continue
        by_image: dict[str, list] = {}
        for i, q in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            ledger.read += 1
            where = f"{path.name}[{i}]"
            missing = [
                k
                for k in ("image_id", "question", "answer", "subject_id", "study_id")
                if q.get(k) in (None, "")
            ]
            if missing:
                ledger.reject("missing field", where, ", ".join(missing), q)
                continue
            by_image.setdefault(str(q["image_id"]), []).append((where, q))
        for image_id in sorted(by_image):
            first = by_image[image_id][0][1]
            subject, study = str(first["subject_id"]), str(first["study_id"])
            dst = image_dst(f"p{subject[:2]}", f"p{subject}", f"s{study}", image_id)
            split = norm_split(first.get("split")) or file_split
            yield Unit(
                f"{path.name}:{image_id}", resolve_image(mimic, first), dst, (split, by_image[image_id])
            )


def records(unit, info, ledger, args):
    split, questions = unit.data
    out = []
    for where, q in questions:
        answer = answer_text(q["answer"])
        if not answer:
            answer = "none"
            count(ledger, "notes", "empty answer list -> 'none'")
        common = base(
            SOURCE, unit.dst, info, q["subject_id"], q["study_id"], split, {"image_id": q["image_id"]}
        )
        meta = {
            k: q.get(k) for k in ("idx", "content_type", "semantic_type", "template", "template_arguments")
        }
        rid = f"{SOURCE}/{q.get('idx', where)}" if q.get("idx") is not None else f"{SOURCE}/{where}"
        out.append(
            record(
                common,
                f"{rid}/{split}",
                "vqa",
                q["question"].strip(),
                answer,
                question_type=q.get("content_type"),
                **meta,
            )
        )
    return out


if __name__ == "__main__":
    main(sys.modules[__name__])
