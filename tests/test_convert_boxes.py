"""Box datasets: NIH ChestX-ray14, VinDr-CXR, RSNA Pneumonia (real label files shipped by
torchxrayvision; synthetic images of the right sizes in the official layout) and MS-CXR."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
from PIL import Image

from data_prep.converters import ms_cxr, nih_cxr14, rsna_pneumonia, vindr_cxr
from data_prep.converters.common import main
from data_prep.frame import scale_box, smart_resize
from data_prep.io import read_records
from rewards.parsing import format_box
from tests.test_images import make_dicom

TXV = Path(importlib.util.find_spec("torchxrayvision").origin).parent / "data"
ARGS = ["--workers", "1", "--no_progress"]


def frame_of(w, h):
    fh, fw = smart_resize(h, w, 3136, 262144)
    return fw, fh


# --------------------------------------------------------------------------- NIH ChestX-ray14


@pytest.fixture(scope="module")
def nih(tmp_path_factory):
    root = tmp_path_factory.mktemp("nih")
    with gzip.open(TXV / "Data_Entry_2017_v2020.csv.gz", "rt", newline="") as f:
        entry = f.read().splitlines(keepends=True)
    with gzip.open(TXV / "BBox_List_2017.csv.gz", "rt", newline="") as f:
        bbox_lines = f.read().splitlines(keepends=True)
    boxed = sorted({line.split(",")[0] for line in bbox_lines[1:]})[:3]
    keep = [entry[0]] + entry[1:11] + [line for line in entry if line.split(",")[0] in boxed]
    (root / "Data_Entry_2017_v2020.csv").write_text("".join(keep))  # the real header, bracketed names
    (root / "BBox_List_2017.csv.gz").symlink_to(TXV / "BBox_List_2017.csv.gz")
    names = [line.split(",")[0] for line in keep[1:]]
    patient = {line.split(",")[0]: line.split(",")[3] for line in keep[1:]}
    test_patients = {patient[n] for n in boxed} | {patient[names[0]]}  # official lists are patient-level
    test = [n for n in names if patient[n] in test_patients]
    train_val = [n for n in names if patient[n] not in test_patients][1:]  # the first one is in neither list
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (root / "images_001" / "images").mkdir(parents=True)
    for name in names:
        if name == train_val[0]:
            continue  # missing on disk
        size = 600 if name == boxed[2] else 1024  # boxes of boxed[2] fall outside this smaller image
        Image.new("L", (size, size), 128).save(root / "images_001" / "images" / name)
    return root, names, boxed, bbox_lines


def test_nih(nih, tmp_path):
    root, names, boxed, bbox_lines = nih
    led = main(nih_cxr14, ["--root", str(root), "--out", str(tmp_path), *ARGS])
    recs = read_records(tmp_path)
    assert led.read == len(names)
    assert led.rejected["missing image"] == 1 and led.rejected["not in split lists"] == 1
    n_outside = sum(1 for line in bbox_lines[1:] if line.startswith(boxed[2] + ","))
    assert led.rejected["box outside image"] == n_outside
    by_id = {r["id"]: r for r in recs}
    # numeric box check on boxed[0]: x, y, w, h in the 1024 frame -> xyxy -> model frame
    fw, fh = frame_of(1024, 1024)
    stem = boxed[0][:-4]
    rows = list(
        csv.reader(io.StringIO("".join(ln for ln in bbox_lines[1:] if ln.startswith(boxed[0] + ","))))
    )
    for row in rows:
        label = {"Infiltrate": "Infiltration"}.get(row[1], row[1])
        x, y, w, h = map(float, row[2:6])
        want = scale_box([x, y, x + w, y + h], (1024, 1024), (fw, fh))
        rec = by_id[f"nih-cxr14/{stem}/grounding/{label.lower().replace(' ', '_')}"]
        assert want in [b["box"] for b in rec["boxes"]] and format_box(want) in rec["answer"]
        assert (rec["width"], rec["height"]) == (fw, fh) and rec["split"] == "test"
    # Data_Entry labels -> classification + presence
    first = names[0]
    entry = next(
        csv.reader(io.StringIO(Path(root / "Data_Entry_2017_v2020.csv").read_text().splitlines()[1]))
    )
    cls = by_id[f"nih-cxr14/{first[:-4]}/classification"]
    assert cls["answer"] == entry[1].replace("|", " | ")
    assert cls["patient_id"] == f"{int(entry[3]):08d}"
    assert cls["meta"]["original_dicom_size"] == [entry[7], entry[8]]  # read through the repaired header
    assert {r["split"] for r in recs} <= {"train", "validation", "test"}
    pats = {}
    for r in recs:
        assert pats.setdefault(r["patient_id"], r["split"]) == r["split"]


# ---------------------------------------------------------------------------------- VinDr-CXR


def test_vindr(tmp_path):
    root = tmp_path / "vindr"
    (root / "train").mkdir(parents=True)
    (root / "train.csv.gz").symlink_to(TXV / "vinbigdata-train.csv.gz")  # the Kaggle layout
    with gzip.open(TXV / "vinbigdata-train.csv.gz", "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    ids = sorted({r["image_id"] for r in rows})[:6]
    ann = {i: [r for r in rows if r["image_id"] == i] for i in ids}
    sizes = {}
    for k, i in enumerate(ids):
        path = root / "train" / f"{i}.dicom"
        if k == 0:
            shutil.copy(pydicom.data.get_testdata_file("RG1_UNCR.dcm"), path)  # real MONOCHROME1
            sizes[i] = (1841, 1955)
        elif k == 1:
            continue  # missing
        elif k == 3:
            path.write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 50)  # -> unreadable DICOM
        else:
            xs = [float(r["x_max"]) for r in ann[i] if r["x_max"]] or [900.0]
            ys = [float(r["y_max"]) for r in ann[i] if r["y_max"]] or [900.0]
            w, h = (2000, 2000) if k == 4 else (int(max(xs)) + 50, int(max(ys)) + 50)
            arr = (np.arange(w * h, dtype=np.uint32) % 4096).astype(np.uint16).reshape(h, w)
            make_dicom(path, arr, bits_stored=12, window=(2048, 4096))
            sizes[i] = (w, h)
    out = tmp_path / "out"
    led = main(vindr_cxr, ["--root", str(root), "--out", str(out), *ARGS, "--limit", "6"])
    recs = read_records(out)
    assert led.rejected["missing image"] == 1 and led.rejected["unreadable DICOM"] == 1
    outside = [
        r
        for i in (ids[2], *ids[4:])
        for r in ann[i]
        if r["x_max"] and (float(r["x_max"]) > sizes[i][0] + 1 or float(r["y_max"]) > sizes[i][1] + 1)
    ]
    assert outside and led.rejected["box outside image"] == len(outside)
    by_id = {r["id"]: r for r in recs}
    # the real MONOCHROME1 image with 3 "No finding" readers
    assert by_id[f"vindr-cxr/{ids[0]}/classification"]["answer"] == "No finding"
    assert by_id[f"vindr-cxr/{ids[0]}/classification"]["meta"]["orig_size"] == [1841, 1955]
    # ids[2] (0005e8e3...): Lung Opacity drawn by R10 and R9, overlapping -> one mean box
    i = ids[2]
    lo = [r for r in ann[i] if r["class_name"] == "Lung Opacity"]
    assert len(lo) == 2
    mean = [sum(float(r[k]) for r in lo) / 2 for k in ("x_min", "y_min", "x_max", "y_max")]
    fw, fh = frame_of(*sizes[i])
    rec = by_id[f"vindr-cxr/{i}/grounding/lung_opacity"]
    assert rec["boxes"] == [{"label": "Lung Opacity", "box": scale_box(mean, sizes[i], (fw, fh))}]
    assert rec["answer"] == format_box(scale_box(mean, sizes[i], (fw, fh))) and rec["meta"][
        "box_readers"
    ] == [2]
    assert (rec["width"], rec["height"]) == (fw, fh) and rec["split"] == "train"
    cls = by_id[f"vindr-cxr/{i}/classification"]["answer"].split(" | ")
    assert cls == ["Consolidation", "Infiltration", "Lung Opacity", "Nodule/Mass"]
    assert by_id[f"vindr-cxr/{i}/presence/nodule_mass"]["answer"] == "yes"


# ------------------------------------------------------------------------------ RSNA Pneumonia


def test_rsna(tmp_path):
    root = tmp_path / "rsna"
    (root / "stage_2_train_images").mkdir(parents=True)
    (root / "stage_2_train_labels.csv.zip").symlink_to(TXV / "kaggle_stage_2_train_labels.csv.zip")
    with zipfile.ZipFile(TXV / "kaggle_stage_2_train_labels.csv.zip") as z:
        rows = list(csv.DictReader(io.TextIOWrapper(z.open("stage_2_train_labels.csv"))))
    pids = sorted({r["patientId"] for r in rows})[:5]
    for pid in pids:
        make_dicom(root / "stage_2_train_images" / f"{pid}.dcm", np.full((1024, 1024), 100, np.uint8))
    out = tmp_path / "out"
    led = main(rsna_pneumonia, ["--root", str(root), "--out", str(out), *ARGS, "--limit", "5"])
    recs = {r["id"]: r for r in read_records(out)}
    assert led.read == len(rows) and led.rejected == {}
    fw, fh = frame_of(1024, 1024)
    for pid in pids:
        boxes = [r for r in rows if r["patientId"] == pid and r["Target"] == "1"]
        assert recs[f"rsna-pneumonia/{pid}/presence/pneumonia"]["answer"] == ("yes" if boxes else "no")
        if boxes:
            want = [
                scale_box(
                    [
                        float(b["x"]),
                        float(b["y"]),
                        float(b["x"]) + float(b["width"]),
                        float(b["y"]) + float(b["height"]),
                    ],
                    (1024, 1024),
                    (fw, fh),
                )
                for b in boxes
            ]
            got = recs[f"rsna-pneumonia/{pid}/grounding"]
            assert [b["box"] for b in got["boxes"]] == want
            assert got["answer"] == " | ".join(format_box(b) for b in want)
    assert any(f"rsna-pneumonia/{p}/grounding" in recs for p in pids)


# ------------------------------------------------------------------------------------- MS-CXR


def test_ms_cxr(tmp_path):
    root, mimic = tmp_path / "ms", tmp_path / "jpg"
    root.mkdir()
    header = [
        "dicom_id",
        "category_name",
        "label_text",
        "path",
        "x",
        "y",
        "w",
        "h",
        "image_width",
        "image_height",
        "split",
    ]
    d1, d2 = "a" * 8 + "-" + "b" * 8, "c" * 8 + "-" + "d" * 8
    p1 = f"files/p10/p10000032/s50414267/{d1}.jpg"
    p2 = f"files/p11/p11000001/s51000001/{d2}.jpg"
    rows = [
        [d1, "Pneumonia", "right lower lobe opacity", p1, 100, 300, 200, 150, 1000, 1200, "train"],
        [d1, "Pneumonia", "right lower lobe opacity", p1, 600, 320, 100, 100, 1000, 1200, "train"],
        [d1, "Cardiomegaly", "enlarged heart", p1, 300, 500, 400, 300, 1000, 1200, "train"],
        [d1, "Pneumothorax", "apical pneumothorax", p1, 900, 100, 300, 100, 1000, 1200, "train"],  # outside
        [d2, "Edema", "bilateral edema", p2, 50, 60, 500, 400, 2000, 2400, "val"],  # declared 2x the JPG
        [d2, "Edema", "", p2, 50, 60, 500, 400, 2000, 2400, "val"],
    ]
    with open(root / "MS_CXR_Local_Alignment_v1.1.0.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    for p, size in ((p1, (1000, 1200)), (p2, (1000, 1200))):
        (mimic / p).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", size, 80).save(mimic / p)
    out = tmp_path / "out"
    led = main(ms_cxr, ["--root", str(root), "--mimic_root", str(mimic), "--out", str(out), *ARGS])
    recs = read_records(out)
    assert dict(led.rejected) == {"box outside image": 1, "empty phrase": 1}
    fw, fh = frame_of(1000, 1200)
    by_phrase = {r["meta"]["phrase"]: r for r in recs}
    assert set(by_phrase) == {"right lower lobe opacity", "enlarged heart", "bilateral edema"}
    rll = by_phrase["right lower lobe opacity"]
    assert [b["box"] for b in rll["boxes"]] == [
        scale_box([100, 300, 300, 450], (1000, 1200), (fw, fh)),
        scale_box([600, 320, 700, 420], (1000, 1200), (fw, fh)),
    ]
    assert "right lower lobe opacity" in rll["question"] and rll["boxes"][0]["label"] == "Pneumonia"
    assert (rll["patient_id"], rll["study_id"], rll["split"]) == ("10000032", "50414267", "train")
    edema = by_phrase["bilateral edema"]
    assert edema["split"] == "validation"
    assert edema["boxes"][0]["box"] == scale_box(
        [25, 30, 275, 230], (1000, 1200), (fw, fh)
    )  # declared 2000x2400


# ------------------------------------------------------------------------------- CSV helpers


def test_bracketed_headers_and_required_columns(tmp_path):
    from data_prep.converters.tables import fix_headers, norm_split, read_csv

    raw = "Image Index,Finding Labels,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]".split(",")
    assert fix_headers(raw) == [
        "Image Index",
        "Finding Labels",
        "OriginalImage[Width]",
        "OriginalImage[Height]",
        "OriginalImagePixelSpacing[x]",
        "OriginalImagePixelSpacing[y]",
    ]
    assert fix_headers("Image Index,Finding Label,Bbox [x,y,w,h],,,".split(",")) == [
        "Image Index",
        "Finding Label",
        "Bbox [x]",
        "Bbox [y]",
        "Bbox [w]",
        "Bbox [h]",
    ]
    rows = list(read_csv(TXV / "BBox_List_2017.csv.gz", required=("Bbox [w]",)))
    assert len(rows) == 984 and rows[0][0] == 2 and float(rows[0][1]["Bbox [h]"]) > 0
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"x.csv: missing column\(s\) Target"):
        list(read_csv(tmp_path / "x.csv", required=("a", "Target")))
    assert [norm_split(s) for s in ("validate", "valid", "val", "train", "test", "?")] == [
        "validation",
        "validation",
        "validation",
        "train",
        "test",
        None,
    ]


def test_vindr_physionet_layout(tmp_path):
    root = tmp_path / "vindr"
    (root / "annotations").mkdir(parents=True)
    header = "image_id,rad_id,class_name,x_min,y_min,x_max,y_max\n"
    (root / "annotations" / "annotations_test.csv").write_text(
        header
        + "img1,R1,Pleural effusion,100,600,400,900\nimg1,R1,Cardiomegaly,300,500,700,800\nimg2,R2,No finding,,,,\n"
    )
    (root / "annotations" / "annotations_train.csv").write_text(header + "img3,R3,Aortic enlargement,,,,\n")
    make_dicom(
        root / "test" / "img1.dicom", np.full((1000, 800), 3000, np.uint16), "MONOCHROME1", bits_stored=12
    )
    make_dicom(root / "test" / "img2.dicom", np.full((1000, 800), 7, np.uint8))
    led = main(vindr_cxr, ["--root", str(root), "--out", str(tmp_path / "out"), *ARGS])
    recs = {r["id"]: r for r in read_records(tmp_path / "out")}
    assert led.rejected == {"missing box": 1}
    assert recs["vindr-cxr/img1/grounding/pleural_effusion"]["split"] == "test"
    fw, fh = frame_of(800, 1000)
    assert recs["vindr-cxr/img1/grounding/cardiomegaly"]["boxes"][0]["box"] == scale_box(
        [300, 500, 700, 800], (800, 1000), (fw, fh)
    )
    assert recs["vindr-cxr/img1/classification"]["answer"] == "Cardiomegaly | Pleural effusion"
    assert recs["vindr-cxr/img2/classification"]["answer"] == "No finding"
