"""CheXpert (real train.csv rows from torchxrayvision) and CheXpert Plus (report CSV)."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
import shutil
from pathlib import Path

import pytest
from PIL import Image

from data_prep.converters import chexpert, chexpert_plus
from data_prep.converters.common import main
from data_prep.io import read_records
from tests.conftest import run_in_process

# the files torchxrayvision ships, located without importing it (importing it loads torch)
TXV = Path(importlib.util.find_spec("torchxrayvision").origin).parent / "data"
N_ROWS = 30


def _jpg(path: Path, size=(320, 390)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, 90).save(path, quality=80)


@pytest.fixture(scope="module")
def chexpert_root(tmp_path_factory):
    """CheXpert-v1.0-small/{train,valid}.csv from the first real rows, with blank JPGs at their paths."""
    root = tmp_path_factory.mktemp("chexpert")
    with gzip.open(TXV / "chexpert_train.csv.gz", "rt", newline="") as f:
        lines = [next(f) for _ in range(N_ROWS + 1)]
    top = root / "CheXpert-v1.0-small"
    top.mkdir()
    (top / "train.csv").write_text("".join(lines[: N_ROWS - 4]))
    # the last rows become a validation CSV (paths moved to valid/, as the real valid.csv has)
    valid = [lines[0]] + [line.replace("/train/", "/valid/") for line in lines[N_ROWS - 4 : N_ROWS + 1]]
    (top / "valid.csv").write_text("".join(valid))
    for _, row in enumerate(csv.DictReader(io.StringIO("".join(lines[: N_ROWS - 4]) + "".join(valid[1:])))):
        if row["Path"].endswith("patient00003/study1/view1_frontal.jpg"):
            continue  # one image missing on disk -> a counted reject
        _jpg(root / row["Path"])
    return root


def test_chexpert(chexpert_root, tmp_path):
    led = main(
        chexpert, ["--root", str(chexpert_root), "--out", str(tmp_path), "--workers", "1", "--no_progress"]
    )
    recs = read_records(tmp_path)
    rows = list(csv.DictReader(open(chexpert_root / "CheXpert-v1.0-small" / "train.csv")))
    rows += list(csv.DictReader(open(chexpert_root / "CheXpert-v1.0-small" / "valid.csv")))
    frontal = [r for r in rows if r["Frontal/Lateral"] == "Frontal"]
    assert led.read == len(rows) == N_ROWS
    assert led.extra["skipped"]["lateral view (use --views all)"] == len(rows) - len(frontal)
    assert led.rejected["missing image"] == 1
    assert {r["split"] for r in recs} == {"train", "validation"}
    assert all(
        r["patient_id"].startswith("patient") and r["study_id"].startswith(r["patient_id"] + "/")
        for r in recs
    )
    by_id = {r["id"]: r for r in recs}
    # patient00002/study2: Cardiomegaly -1 (skipped), Lung Opacity 1, Pneumothorax blank, Fracture 1
    base = "chexpert/train/patient00002/study2/view1_frontal"
    assert by_id[f"{base}/presence/lung_opacity"]["answer"] == "yes"
    assert f"{base}/presence/cardiomegaly" not in by_id
    assert by_id[f"{base}/classification"]["answer"] == "Fracture | Lung Opacity"  # in label-list order
    # patient00001: No Finding 1, Support Devices 1, Pneumothorax 0
    p1 = "chexpert/train/patient00001/study1/view1_frontal"
    assert by_id[f"{p1}/presence/pneumothorax"]["answer"] == "no"
    assert by_id[f"{p1}/classification"]["answer"] == "Support Devices"
    assert by_id[f"{p1}/classification"]["width"] % 28 == 0


PLUS_HEADER = [
    "path_to_image", "path_to_dcm", "frontal_lateral", "ap_pa", "deid_patient_id", "patient_report_date_order",
    "report", "section_findings", "section_impression", "split",
]  # fmt: skip


def test_chexpert_plus(tmp_path):
    root = tmp_path / "plus"
    rows = [
        [
            "train/patient00001/study1/view1_frontal.jpg",
            "",
            "Frontal",
            "AP",
            "pid1",
            "1",
            "r",
            "Clear lungs.",
            "Normal.",
            "train",
        ],
        [
            "train/patient00001/study1/view2_lateral.jpg",
            "",
            "Lateral",
            "",
            "pid1",
            "1",
            "r",
            "Clear lungs.",
            "Normal.",
            "train",
        ],
        [
            "train/patient00002/study1/view1_lateral.jpg",
            "",
            "Lateral",
            "",
            "pid2",
            "1",
            "r",
            "",
            "Effusion.",
            "train",
        ],
        [
            "valid/patient64541/study1/view1_frontal.jpg",
            "",
            "Frontal",
            "PA",
            "pid3",
            "1",
            "r",
            "Cardiomegaly.",
            "",
            "valid",
        ],
        [
            "train/patient00004/study1/view1_frontal.jpg",
            "",
            "Frontal",
            "AP",
            "pid4",
            "1",
            "r",
            "",
            "  ",
            "train",
        ],
        [
            "train/patient00005/study1/view1_frontal.jpg",
            "",
            "Frontal",
            "AP",
            "pid5",
            "1",
            "r",
            "Text.",
            "",
            "bogus",
        ],
    ]
    root.mkdir()
    with open(root / "df_chexpert_plus_240401.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(PLUS_HEADER)
        w.writerows(rows)
    for r in rows[:4]:
        _jpg((root / "PNG" / r[0]).with_suffix(".png"))  # the PNG release layout
    out = tmp_path / "out"
    led = main(chexpert_plus, ["--root", str(root), "--out", str(out), "--workers", "1", "--no_progress"])
    recs = {r["id"]: r for r in read_records(out)}
    assert set(recs) == {
        "chexpert-plus/patient00001/study1/findings",
        "chexpert-plus/patient00001/study1/impression",
        "chexpert-plus/patient00002/study1/impression",  # lateral only: kept
        "chexpert-plus/patient64541/study1/findings",
    }
    assert recs["chexpert-plus/patient00001/study1/findings"]["meta"]["view"] == "Frontal"
    assert recs["chexpert-plus/patient64541/study1/findings"]["split"] == "validation"
    assert dict(led.rejected) == {"empty report": 1, "unknown split": 1}


def test_a_csv_without_a_column_is_one_line_naming_file_and_columns(chexpert_root, tmp_path):
    """A train.csv without its view column: one line naming the file, the column and the columns found,
    no traceback (--debug or OPENMEDIX_DEBUG=1 shows it)."""
    root = tmp_path / "broken"
    shutil.copytree(chexpert_root, root, symlinks=True)
    train = root / "CheXpert-v1.0-small" / "train.csv"
    train.write_text(train.read_text().replace("Frontal/Lateral", "View", 1))
    args = ["--root", str(root), "--out", str(tmp_path / "out"), "--workers", "1", "--no_progress"]
    with pytest.raises(SystemExit) as e:
        main(chexpert, args)
    message = str(e.value.code)
    assert "\n" not in message and message.startswith(f"chexpert: {train}: missing column(s) Frontal/Lateral")
    assert "columns found: 'Path', 'Sex', 'Age', 'View', 'AP/PA'" in message
    proc = run_in_process("data_prep.converters.chexpert", *args)
    assert proc.returncode == 1 and proc.stderr.strip() == message and "Traceback" not in proc.stderr
    assert "Traceback" in run_in_process("data_prep.converters.chexpert", *args, "--debug").stderr
    (root / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"^chexpert: none of train.csv \(or .gz/.zip\) found under"):
        main(chexpert, ["--root", str(root / "empty"), "--out", str(tmp_path / "o2"), "--no_progress"])
