"""Data-prep benchmark: the MIMIC-CXR converter on a generated MIMIC-like tree.

Usage:
    python -m benchmarks.data [--studies 20000] [--out bench.json] [--workers N] [--keep DIR]

Generates, in a temp folder, a MIMIC-CXR-JPG-shaped tree (files/p1X/p<subject>/s<study>/
<dicom>.jpg, small JPGs of a few sizes; one report .txt per study drawn from a table of
real-world section variants; metadata, split and CheXpert CSVs, gzipped; a few missing
images / reports and empty reports so the ledger has rejects). Then, at two sizes
(--studies / 4 and --studies), runs ``python -m data_prep.converters.mimic_cxr`` twice in a fresh process:

* cold: every image decoded, resized into the frame and written -> images/s (converted images
  over the converter's run time: the image step is the bottleneck, records are built while the
  workers convert the next batch) and CPU ms per image (independent of other load);
* warm: the same command again; images come from the cache -> records/s of the converter.

Peak resident memory (the converter's main process and its largest worker) is reported for
both sizes: the run streams, so it should barely change between them.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from data_prep.labels import CHEXPERT_LABELS

# Report variants the section parser must handle (also used by the tests).
REPORT_VARIANTS = {
    "standard": (
        "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n \n"
        " INDICATION:  ___F with cough.\n \n TECHNIQUE:  Chest PA and lateral\n \n COMPARISON:  ___\n \n"
        " FINDINGS: \n \n The lungs are clear. No pleural effusion or pneumothorax.\n \n"
        " IMPRESSION: \n \n No acute cardiopulmonary process.\n"
    ),
    "conclusion": (
        "                                 FINAL REPORT\n INDICATION:  Fever.\n \n"
        " FINDINGS:  Mild cardiomegaly. Small left effusion.\n \n"
        " CONCLUSION:  Small left pleural effusion.\n"
    ),
    "addendum_first": (
        "                                 FINAL REPORT ADDENDUM\n \n ADDENDUM:  Findings were discussed with Dr. ___.\n \n"
        " ___\n                                 FINAL REPORT\n INDICATION:  Chest pain.\n \n"
        " FINDINGS:  Heart size is normal. Lungs are clear.\n \n IMPRESSION:  Normal chest.\n"
    ),
    "impression_only": (
        "                                 FINAL REPORT\n EXAMINATION:  Portable chest.\n \n"
        " IMPRESSION:  Endotracheal tube in standard position.\n"
    ),
    "findings_only": (
        "                                 FINAL REPORT\n INDICATION:  Line placement.\n \n"
        " FINDINGS:  Right PICC tip in the lower SVC. No pneumothorax.\n"
    ),
    "findings_and_impression": (
        "                                 FINAL REPORT\n INDICATION:  Dyspnea.\n \n"
        " FINDINGS AND IMPRESSION:  Moderate pulmonary edema, improved since prior.\n"
    ),
    "typo_header": (
        "                                 FINAL REPORT\n FINDNGS:  Low lung volumes. Bibasilar atelectasis.\n \n"
        " IMPRESSON:  Bibasilar atelectasis.\n"
    ),
    "two_impressions": (
        "                                 FINAL REPORT\n IMPRESSION:  Preliminary read: no change.\n \n"
        " FINDINGS:  Stable right lower lobe opacity.\n \n IMPRESSION:  Stable right lower lobe pneumonia.\n"
    ),
    "no_headers": (
        "                                 FINAL REPORT\n CHEST RADIOGRAPH \n \n"
        " Frontal view of the chest. \n \n Lungs are clear without consolidation.\n"
    ),
    "empty": "                                 FINAL REPORT\n EXAMINATION:  CHEST (PORTABLE AP)\n \n INDICATION:  ___\n",
}
# How often each variant is generated (standard dominates, as in the real data).
VARIANT_CYCLE = ["standard"] * 10 + [k for k in REPORT_VARIANTS if k != "standard"]
JPEG_SIZES = ((416, 512), (448, 480), (400, 520), (464, 464))  # small: each still resized to x28 sides


def _dicom_id(i: int) -> str:
    h = hashlib.sha1(str(i).encode()).hexdigest()
    return "-".join(h[k : k + 8] for k in range(0, 40, 8))


def _jpegs(seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for w, h in JPEG_SIZES:
        for _ in range(2):
            y, x = np.mgrid[0:h, 0:w]
            img = 128 + 60 * np.sin(x / (20 + rng.integers(20))) * np.cos(y / (25 + rng.integers(20)))
            img = np.clip(img + rng.normal(0, 3, (h, w)), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=90)
            out.append(buf.getvalue())
    return out


def make_mimic_tree(root: str | Path, studies: int, seed: int = 0, bad_every: int = 200) -> dict:
    """Write a MIMIC-CXR-JPG-like tree (+ reports) with ``studies`` studies; returns counts.

    Every ``bad_every``-th study lacks its image, the next one its report (0 disables). About one
    study in four also has a lateral image (the converter must prefer the frontal one).
    """
    root = Path(root)
    jpegs = _jpegs(seed)
    splits = ("train",) * 18 + ("validate", "test")
    label_values = ("1.0", "0.0", "-1.0", "", "", "", "", "")
    meta_rows, split_rows, label_rows = [], [], []
    n_images = missing_images = missing_reports = 0
    for i in range(studies):
        subject = str(10_000_000 + i // 2)
        study = str(50_000_000 + i)
        split = splits[int(hashlib.sha1(subject.encode()).hexdigest(), 16) % len(splits)]
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}"
        views = ["PA" if i % 3 else "AP"] + (["LATERAL"] if i % 4 == 0 else [])
        for k, view in enumerate(views):
            dicom = _dicom_id(i * 4 + k)
            meta_rows.append(
                [
                    dicom,
                    subject,
                    study,
                    "CHEST (PA AND LAT)",
                    view,
                    3056,
                    2544,
                    "21800506",
                    "213014.531",
                    "",
                    "",
                    "",
                ]
            )
            split_rows.append([dicom, study, subject, split])
            if bad_every and k == 0 and i % bad_every == 1:
                missing_images += 1
                continue
            (folder / f"s{study}").mkdir(parents=True, exist_ok=True)
            (folder / f"s{study}" / f"{dicom}.jpg").write_bytes(jpegs[(i + k) % len(jpegs)])
            n_images += 1
        if bad_every and i % bad_every == 2:
            missing_reports += 1
        else:
            variant = VARIANT_CYCLE[i % len(VARIANT_CYCLE)]
            (folder / f"s{study}.txt").write_text(REPORT_VARIANTS[variant])
        label_rows.append(
            [subject, study] + [label_values[(i * 7 + j * 3) % len(label_values)] for j in range(14)]
        )

    def write_gz(name, header, rows):
        with gzip.open(root / name, "wt", newline="", compresslevel=1) as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)

    write_gz(
        "mimic-cxr-2.0.0-metadata.csv.gz",
        ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
         "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
         "PatientOrientationCodeSequence_CodeMeaning"],
        meta_rows,
    )  # fmt: skip
    write_gz("mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], split_rows)
    write_gz("mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id", *CHEXPERT_LABELS], label_rows)
    return {
        "studies": studies,
        "images": n_images,
        "missing_images": missing_images,
        "missing_reports": missing_reports,
    }


def run_converter(root: Path, out: Path, workers: int) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "data_prep.converters.mimic_cxr", "--root", str(root), "--out", str(out)]
    cmd += ["--workers", str(workers), "--no_progress"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=Path(__file__).resolve().parent.parent)
    wall = time.perf_counter() - t0
    return json.loads((out / "ledger.json").read_text()), wall


def _image_cpu(ledger: dict, workers: int) -> float:
    """CPU seconds spent on images: the workers' (in-process: the whole run's)."""
    return ledger["cpu_seconds"]["workers"] if workers > 1 else ledger["cpu_seconds"]["main"]


def bench_size(tmp: Path, studies: int, workers: int) -> dict:
    root, out = tmp / f"mimic-{studies}", tmp / f"out-{studies}"
    t0 = time.perf_counter()
    tree = make_mimic_tree(root, studies)
    gen_s = time.perf_counter() - t0
    cold, cold_wall = run_converter(root, out, workers)
    warm, warm_wall = run_converter(root, out, workers)
    converted = cold["images"].get("converted", 0)
    return {
        "tree": tree,
        "generate_s": round(gen_s, 1),
        "records": warm["written"],
        "rejected": warm["rejected_by_reason"],
        "images_converted": converted,
        "cold": {
            "wall_s": round(cold_wall, 1),
            "run_s": cold["seconds"],
            "images_per_s": round(converted / cold["seconds"], 1) if cold["seconds"] else None,
            "cpu_ms_per_image": round(1000 * _image_cpu(cold, workers) / converted, 2) if converted else None,
            "records_per_s": round(cold["written"] / cold["seconds"], 1),
            "peak_rss_mb": cold["peak_rss_mb"],
        },
        "warm": {
            "wall_s": round(warm_wall, 1),
            "records_per_s": round(warm["written"] / warm["seconds"], 1),
            "studies_per_s": round(warm["read"] / warm["seconds"], 1),
            "cpu_s": warm["cpu_seconds"],
            "cached_images": warm["images"].get("cached", 0),
            "peak_rss_mb": warm["peak_rss_mb"],
        },
    }


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.data", description=__doc__.split("\n\n")[0])
    p.add_argument("--studies", type=int, default=20000, help="studies at the large size (small = 1/4)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temp folder)")
    args = p.parse_args(argv)
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="openmedix-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        sizes = sorted({max(1, args.studies // 4), args.studies})
        results = {"cpu_count": os.cpu_count(), "workers": args.workers, "sizes": {}}
        for n in sizes:
            print(f"[bench] {n} studies ...", flush=True)
            results["sizes"][str(n)] = r = bench_size(tmp, n, args.workers)
            print(
                f"[bench] {n:>6} studies: images {r['cold']['images_per_s']}/s (cold; "
                f"{r['cold']['cpu_ms_per_image']} ms CPU each), "
                f"records {r['warm']['records_per_s']}/s (warm), {r['cold']['records_per_s']}/s end to end; "
                f"peak RSS main {r['cold']['peak_rss_mb']['main']} MiB, "
                f"worker {r['cold']['peak_rss_mb']['largest_worker']} MiB",
                flush=True,
            )
        text = json.dumps(results, indent=2)
        if args.out:
            Path(args.out).write_text(text + "\n")
        print(text)
        return results
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
