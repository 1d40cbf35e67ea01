"""IU X-ray / OpenI (NLMCXR XML reports + PNG images) -> report_findings / report_impression.

Usage:
    python -m data_prep.converters.iu_xray --root NLMCXR --out data/iu-xray [--images DIR] [--all_images]

Reads the reports from --root/ecgen-radiology/*.xml or straight from --root/NLMCXR_reports.tgz
(AbstractText Label="FINDINGS" / "IMPRESSION"; de-identification "XXXX" kept as is) and the
images each report names (<parentImage id="CXR1_1_IM-0001-3001">) as <id>.png under --images
(default: --root/NLMCXR_png, --root/images or --root). One record pair per report with its
first image (--all_images: one per image). No official split: patients (one report = one
patient, id CXR<n>) are split 70/10/20 by a hash of the id.
"""

from __future__ import annotations

import re
import sys
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from data_prep.converters.common import Unit, image_dst, main
from data_prep.converters.reports import clean
from data_prep.labels import base, hash_split, report_records

SOURCE = "iu-xray"


def add_args(p):
    p.add_argument("--images", default=None, help="folder holding <image id>.png")
    p.add_argument("--all_images", action="store_true", help="one record pair per image, not per report")


def _number(name: str) -> int:
    m = re.search(r"(\d+)\.xml$", name)
    return int(m.group(1)) if m else 0


def iter_xml(root: Path) -> Iterator[tuple[str, bytes]]:
    """(name, XML bytes) of every report (folder: report-number order; archive: its order)."""
    folder = root / "ecgen-radiology"
    if folder.is_dir():
        for f in sorted(folder.glob("*.xml"), key=lambda f: _number(f.name)):
            yield f.name, f.read_bytes()
        return
    archive = next(iter(sorted(root.glob("NLMCXR_reports.tgz"))), None) or next(
        iter(sorted(root.glob("*.tgz"))), None
    )
    if archive is None:
        raise FileNotFoundError(f"neither {folder} nor NLMCXR_reports.tgz found under {root}")
    with tarfile.open(archive, "r:*") as tar:
        for m in tar:  # archive order: streaming, no seeks back in the gzip stream
            if m.isfile() and m.name.endswith(".xml"):
                yield f"{archive.name}:{m.name}", tar.extractfile(m).read()


def parse_report(xml: bytes) -> dict:
    """uid, findings, impression, other sections, image ids, MeSH terms of one report."""
    tree = ET.fromstring(xml)
    uid = tree.find("uId")
    sections = {
        (t.get("Label") or "").strip().upper(): clean(t.text or "") for t in tree.iter("AbstractText")
    }
    return {
        "uid": uid.get("id") if uid is not None else None,
        "findings": sections.get("FINDINGS", ""),
        "impression": sections.get("IMPRESSION", ""),
        "indication": sections.get("INDICATION", ""),
        "images": [p.get("id") for p in tree.iter("parentImage") if p.get("id")],
        "mesh": [clean(m.text or "") for m in tree.iter("major") if m.text],
    }


def find_image(folders: list[Path], image_id: str) -> Path:
    for folder in folders:
        for ext in (".png", ".jpg", ".jpeg"):
            p = folder / f"{image_id}{ext}"
            if p.exists():
                return p
    return folders[0] / f"{image_id}.png"


def units(args, ledger):
    root = Path(args.root)
    folders = [Path(args.images)] if args.images else [root / "NLMCXR_png", root / "images", root]
    folders = [f for f in folders if f.is_dir()] or folders[:1]
    for name, xml in iter_xml(root):
        ledger.read += 1
        try:
            rep = parse_report(xml)
        except ET.ParseError as e:
            ledger.reject("unreadable report", name, str(e))
            continue
        if not rep["uid"]:
            ledger.reject("report without id", name, "no <uId id=...>")
            continue
        if not rep["findings"] and not rep["impression"]:
            ledger.reject("empty report", name, "no FINDINGS or IMPRESSION text")
            continue
        if not rep["images"]:
            ledger.reject("report without image", name, "no <parentImage>")
            continue
        split = hash_split(rep["uid"], salt="iu-xray/")
        for image_id in rep["images"] if args.all_images else rep["images"][:1]:
            yield Unit(name, find_image(folders, image_id), image_dst(image_id), (rep, image_id, split))


def records(unit, info, ledger, args):
    rep, image_id, split = unit.data
    meta = {"image_id": image_id, "indication": rep["indication"], "mesh": rep["mesh"]}
    common = base(SOURCE, unit.dst, info, rep["uid"], rep["uid"], split, meta)
    rid = f"{SOURCE}/{rep['uid']}" + (f"/{image_id}" if args.all_images else "")
    return report_records(common, rid, rep["findings"], rep["impression"])


if __name__ == "__main__":
    main(sys.modules[__name__])
