import copy
import json

import pytest

from data_prep.io import read_records, write_jsonl
from data_prep.schema import RecordError, is_credentialed, make_record, validate_record

GOOD = dict(
    id="r1",
    source="phantom",
    task="grounding",
    question="Locate the nodule.",
    answer="[10, 20, 40, 50]",
    boxes=[{"label": "nodule", "box": [10, 20, 40, 50]}],
    image="images/a.png",
    width=112,
    height=112,
    patient_id="p1",
    study_id="s1",
    split="train",
)


def test_good_record_validates_and_defaults_optionals():
    rec = make_record(**GOOD)
    assert rec["reasoning"] is None and rec["meta"] is None


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("answer"), "missing field(s): answer"),
        (lambda r: r.update(task="captioning"), "unknown task 'captioning'"),
        (lambda r: r.update(split="dev"), "unknown split 'dev'"),
        (lambda r: r.update(width="112"), "field 'width' must be int"),
        (lambda r: r.update(width=True), "field 'width' must be int"),
        (lambda r: r.update(answer="  "), "field 'answer' is empty"),
        (lambda r: r["boxes"][0].update(box=[40, 20, 10, 50]), "x_min >= x_max"),
        (lambda r: r["boxes"][0].update(box=[10, 50, 40, 50]), "y_min >= y_max"),
        (lambda r: r["boxes"][0].update(box=[10, 20, 40, 113]), "outside the 112x112 frame"),
        (lambda r: r["boxes"][0].update(box=[-1, 20, 40, 50]), "outside the 112x112 frame"),
        (lambda r: r["boxes"][0].update(box=[10, 20, 40]), "list of 4 numbers"),
        (lambda r: r["boxes"][0].update(box=[10, 20, 40, float("nan")]), "non-finite"),
        (lambda r: r.update(boxes=[[10, 20, 40, 50]]), "boxes[0] must be"),
        (lambda r: r.update(boxes=[]), "needs at least one box"),
        (lambda r: r.update(colour="red"), "unknown field(s): colour"),
        (lambda r: r.update(meta="x"), "field 'meta' must be dict"),
    ],
)
def test_bad_records_are_rejected_with_the_reason(change, message):
    rec = copy.deepcopy(GOOD)
    change(rec)
    with pytest.raises(RecordError) as err:
        validate_record(rec)
    assert message in str(err.value)


def test_read_records_names_file_line_and_id(tmp_path):
    bad = {**copy.deepcopy(GOOD), "id": "broken", "task": "nope"}
    write_jsonl(tmp_path / "records.jsonl", [make_record(**GOOD), bad])
    with pytest.raises(RecordError) as err:
        read_records(tmp_path)
    assert (
        "records.jsonl:2" in str(err.value)
        and "broken" in str(err.value)
        and "unknown task" in str(err.value)
    )
    (tmp_path / "records.jsonl").write_text(json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(RecordError, match="records.jsonl:2: not valid JSON"):
        read_records(tmp_path)


def test_credentialed_sources():
    assert is_credentialed("mimic-cxr") and is_credentialed("vindr-cxr") and is_credentialed("ms-cxr")
    assert (
        not is_credentialed("phantom") and not is_credentialed("nih-cxr14") and not is_credentialed("iu-xray")
    )


def test_data_prep_errors_are_project_errors_not_exits(tmp_path):
    """Library code raises OpenMedixError subclasses (each also the builtin that fits), never SystemExit:
    ``except Exception`` sees them and only an entry point's main turns them into an exit."""
    from data_prep.errors import OpenMedixError
    from data_prep.families import FamilyError, FamilyMismatch
    from data_prep.frame import FrameMismatch
    from data_prep.images import ImageError
    from data_prep.io import DatasetNotFoundError, ImagePathError
    from data_prep.mixture import MixtureError
    from data_prep.trl_dataset import BadRowsError

    errors = (RecordError, ImagePathError, ImageError, MixtureError, FamilyError, FamilyMismatch)
    errors += (FrameMismatch, BadRowsError)
    for error in errors:
        assert issubclass(error, OpenMedixError) and issubclass(error, ValueError), error
        assert not issubclass(error, SystemExit), error
    assert issubclass(DatasetNotFoundError, OpenMedixError) and issubclass(
        DatasetNotFoundError, FileNotFoundError
    )
    with pytest.raises(DatasetNotFoundError, match="Make a dataset first"):
        read_records(tmp_path / "nowhere")
