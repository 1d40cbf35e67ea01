"""The VLM judge against a local OpenAI-compatible server (tests/openai_stub_server.py): both orders
asked, swap-inconsistent verdicts counted as ties and reported, agreement with the human votes."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from evaluation.review import db
from evaluation.review.__main__ import main
from evaluation.review.analyse import analyse
from evaluation.review.judge import JudgeStopped, judge_study, parse_verdict
from evaluation.review.study import CRITERION_KEYS, StudyError
from tests.openai_stub_server import Status, StubServer
from tests.review_fixtures import GOOD, RUNS, cast, make_study

X, Y = RUNS
N = 5


def responses(req) -> tuple[str, str]:
    text = req.text
    a = text.split("Response A:\n", 1)[1].split("\n\nResponse B:\n", 1)[0]
    b = text.split("Response B:\n", 1)[1]
    return a.strip(), b.strip()


def scripted_judge(req, stub) -> str:
    """grounded: always the good run (consistent); correctness: always A (position decides: flipped);
    grounding: always tie; coherence: the good run when it is A, else tie (half)."""
    a, _ = responses(req)
    good = "A" if GOOD in a else "B"
    verdict = {
        "grounded_preference": good,
        "clinical_correctness": "A",
        "visual_grounding": "tie",
        "coherence": "A" if good == "A" else "tie",
    }
    return "Here is my verdict:\n```json\n" + json.dumps(verdict) + "\n```"


@pytest.fixture()
def study(tmp_path):
    folder, _, _ = make_study(tmp_path, limit=N, reviewers=("alice",))
    return folder


def test_both_orders_asked_inconsistent_verdicts_are_ties(study, capsys):
    with StubServer(scripted_judge) as stub:
        summary = judge_study(study, base_url=stub.base_url, model="stub-vlm", concurrency=3)
        assert stub.problems == []
        reqs = list(stub.requests)
    assert summary["saved"] == 2 * N and summary["failed"] == {}
    assert len(reqs) == 2 * N
    pairs = [responses(r) for r in reqs]
    assert all((b, a) in pairs for a, b in pairs)  # every pair asked in both orders
    for r in reqs:
        assert len(r.images) == 2 and r.model == "stub-vlm"  # the image with A's boxes, then with B's
        assert all(im.size == (112, 112) for im in r.images)
        system = r.body["messages"][0]["content"]
        assert all(f'"{k}"' in system for k in CRITERION_KEYS)
        assert "Ground truth" not in r.text  # the study hides it, so does the judge
        assert X not in json.dumps(r.body) and Y not in json.dumps(r.body)  # blind too
    # the cited boxes are drawn: red pixels on the grey X-ray
    url = reqs[0].body["messages"][1]["content"][1]["image_url"]["url"]
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    assert ((pixels == (220, 38, 38)).all(axis=1)).any()

    r = analyse(study, n_boot=200)
    j = r["judge"]["stub-vlm"]
    t = j["tallies"]
    assert t["grounded_preference"] == {"consistent win": N}
    assert t["clinical_correctness"] == {"swap-inconsistent: flipped": N}
    assert t["visual_grounding"] == {"consistent tie": N}
    assert t["coherence"] == {"swap-inconsistent: half": N}
    c = j["criteria"]
    assert c["grounded_preference"]["share"][X] == 1.0
    assert c["clinical_correctness"]["share"]["tie"] == 1.0  # position bias removed, not counted as wins
    assert c["coherence"]["share"]["tie"] == 1.0
    assert j["position_bias"]["clinical_correctness"] == 1.0  # always the first position
    assert j["position_bias"]["grounded_preference"] == 0.5
    assert j["single_verdicts_by_side"]["clinical_correctness"] == {"A": 2 * N}

    # a rerun asks nothing; the report shows the judge's tallies
    with StubServer(scripted_judge) as stub:
        assert judge_study(study, base_url=stub.base_url, model="stub-vlm")["asked"] == 0
        assert stub.requests == []
    main(["analyse", str(study), "--bootstrap", "0"])
    text = capsys.readouterr().out
    assert "## VLM judge: stub-vlm" in text and "swap-inconsistent" in text
    assert (
        f"| Clinical correctness | {N} | - | 0.0000 | 0.0000 | 1.0000 | 0 / 0 | {N} / 0 | 0 | 1.000 |" in text
    )


def test_agreement_with_human_votes(study):
    with StubServer(scripted_judge) as stub:
        judge_study(study, base_url=stub.base_url, model="stub-vlm")
    # alice prefers X on grounded preference on every item but one; the judge always says X:
    # agreement 4/5, and Cohen's kappa 0 (po = 4/5 = pe: no better than chance)
    with db.connect(db.study_db(study)) as conn:
        idxs = [i["idx"] for i in db.items(conn)]
    cast(study, "alice", {i: {k: (Y if i == idxs[0] else X) for k in CRITERION_KEYS} for i in idxs})
    h = analyse(study, n_boot=0)["judge"]["stub-vlm"]["criteria"]["grounded_preference"]["human_agreement"]
    assert h["n_pairs"] == N and h["agreement"] == pytest.approx(4 / 5)
    assert h["cohen_kappa"] == pytest.approx(0.0)
    # visual grounding: judge all tie, alice never tie: agreement 0
    v = analyse(study, n_boot=0)["judge"]["stub-vlm"]["criteria"]["visual_grounding"]["human_agreement"]
    assert v["agreement"] == 0.0


def test_failures_unclear_replies_and_data_use(study, tmp_path):
    calls = {"n": 0}

    def flaky(req, stub):
        calls["n"] += 1
        return Status(400, "bad request") if calls["n"] == 1 else "I cannot tell."

    with StubServer(flaky) as stub:
        s = judge_study(study, base_url=stub.base_url, model="m2", concurrency=1, max_retries=0)
    assert s["saved"] == 2 * N - 1 and s["failed"] == {"HTTP 400": 1}
    j = analyse(study, n_boot=0)["judge"]["m2"]
    assert j["tallies"]["grounded_preference"] == {"invalid or missing": N}  # unclear: never a win
    with StubServer(lambda req, stub: Status(401, "no")) as stub:
        with pytest.raises(JudgeStopped, match="refused the API key"):
            judge_study(study, base_url=stub.base_url, model="m3", concurrency=1)

    cred, _, _ = make_study(tmp_path / "cred", limit=2, reviewers=("alice",), source="vindr-cxr")
    with pytest.raises(StudyError, match=r"Refusing to send 2 credentialed item\(s\) \(vindr-cxr: 2\)"):
        judge_study(cred, base_url="http://10.20.30.40:8000/v1", model="m")


def test_parse_verdict():
    assert parse_verdict('{"grounded_preference": "A", "clinical_correctness": "b", "visual_grounding": "Tie", '
                         '"coherence": "Response B"}') == {
        "grounded_preference": "A",
        "clinical_correctness": "B",
        "visual_grounding": "tie",
        "coherence": "B",
    }  # fmt: skip
    assert parse_verdict("grounded_preference: A\ncoherence = tie\n") == {
        "grounded_preference": "A",
        "clinical_correctness": None,
        "visual_grounding": None,
        "coherence": "tie",
    }
    assert set(parse_verdict("no idea").values()) == {None}
    assert parse_verdict('{"grounded_preference": "C"}')["grounded_preference"] is None
