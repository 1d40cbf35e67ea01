"""The analysis on two simulated reviewers with known votes: rates, CIs, kappas worked out by hand."""

from __future__ import annotations

import json

import pytest

from evaluation.review.__main__ import main
from evaluation.review.analyse import analyse, cohen_kappa, fleiss_kappa, write_analysis
from tests.review_fixtures import RUNS, assignments, cast, make_study

X, Y = RUNS
T = "tie"
# per criterion: (alice's winners, bob's winners) on items 0..5
VOTES = {
    "grounded_preference": ([X, X, X, Y, T, X], [X, X, Y, Y, T, X]),
    "clinical_correctness": ([X, Y, X, Y, X, Y], [X, Y, X, Y, X, Y]),
    "visual_grounding": ([X] * 6, [X] * 6),
    "coherence": ([T, T, T, X, Y, X], [X, Y, T, T, T, X]),
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder, _, _ = make_study(tmp_path_factory.mktemp("review"), limit=6)
    for who, k in (("alice", 0), ("bob", 1)):
        cast(folder, who, {i: {c: v[k][i] for c, v in VOTES.items()} for i in range(6)})
    return folder


def test_rates_and_kappas_match_hand_computed_values(study):
    r = analyse(study, n_boot=500, seed=0)
    assert r["focus"] == X and r["reviewers"] == {"alice": 6, "bob": 6}
    g = r["criteria"]["grounded_preference"]
    # 12 votes: X 4+3 = 7, Y 1+2 = 3, tie 1+1 = 2; ties left out: 7 / 10
    assert g["votes"] == {X: 7, Y: 3, T: 2}
    assert g["share"] == pytest.approx({X: 7 / 12, Y: 3 / 12, T: 2 / 12})
    assert g["preference"] == pytest.approx(0.7)
    # Cohen: agree on 5 of 6 items, po = 5/6; marginals alice X4 Y1 T1, bob X3 Y2 T1:
    # pe = (4*3 + 1*2 + 1*1) / 36 = 15/36; kappa = (30/36 - 15/36) / (21/36) = 15/21
    pair = g["agreement"]["cohen_kappa"]["alice vs bob"]
    assert pair["n_items"] == 6 and pair["agreement"] == pytest.approx(5 / 6)
    assert pair["cohen_kappa"] == pytest.approx(15 / 21)
    # Fleiss: pooled p = (7, 3, 2)/12, Pe = (49 + 9 + 4)/144 = 62/144, P = 5/6 = 120/144:
    # kappa = (120 - 62) / (144 - 62) = 58/82
    assert g["agreement"]["fleiss_kappa"] == pytest.approx(58 / 82)
    assert g["agreement"]["fleiss_items"] == 6

    c = r["criteria"]["clinical_correctness"]  # perfect agreement, an even split
    assert c["preference"] == pytest.approx(0.5) and c["share"][T] == 0
    assert c["agreement"]["cohen_kappa"]["alice vs bob"]["cohen_kappa"] == pytest.approx(1.0)
    assert c["agreement"]["fleiss_kappa"] == pytest.approx(1.0)

    v = r["criteria"]["visual_grounding"]  # everyone always X: chance agreement is 1, kappa undefined
    assert v["preference"] == 1.0 and v["ci"]["preference"] == (1.0, 1.0)
    assert v["agreement"]["cohen_kappa"]["alice vs bob"]["cohen_kappa"] is None
    assert v["agreement"]["fleiss_kappa"] is None

    h = r["criteria"]["coherence"]
    # X 2+2, Y 1+1, tie 3+3; po = 2/6, pe = (3*3 + 2*2 + 1*1)/36 = 14/36: kappa = -2/22 (both kinds)
    assert h["share"] == pytest.approx({X: 4 / 12, Y: 2 / 12, T: 6 / 12})
    assert h["preference"] == pytest.approx(4 / 6)
    assert h["agreement"]["cohen_kappa"]["alice vs bob"]["cohen_kappa"] == pytest.approx(-1 / 11)
    assert h["agreement"]["fleiss_kappa"] == pytest.approx(-1 / 11)

    for e in r["criteria"].values():
        lo, hi = e["ci"]["preference"]
        assert 0 <= lo <= e["preference"] <= hi <= 1
        assert sum(e["share"].values()) == pytest.approx(1)
    assert 0.2 <= g["ci"]["preference"][0] < 0.7 < g["ci"]["preference"][1] <= 1.0  # 6 items: a wide CI


def test_per_task_breakdown_and_focus(study):
    r = analyse(study, n_boot=0)
    tasks = {row["idx"]: row["task"] for row in assignments(study, "alice")}
    per = r["per_task"]
    assert set(per) == set(tasks.values())
    assert sum(t["grounded_preference"]["n_votes"] for t in per.values()) == 12
    for task, crits in per.items():
        items = [i for i, t in tasks.items() if t == task]
        winners = [VOTES["grounded_preference"][k][i] for i in items for k in (0, 1)]
        assert crits["grounded_preference"]["votes"] == {
            X: winners.count(X),
            Y: winners.count(Y),
            T: winners.count(T),
        }
    flipped = analyse(study, focus=Y, n_boot=0)["criteria"]["grounded_preference"]
    assert flipped["preference"] == pytest.approx(0.3)


def test_report_plot_and_paper_column(study, tmp_path, capsys):
    out = tmp_path / "analysis"
    main(["analyse", str(study), "--out", str(out), "--paper", "--bootstrap", "200"])
    text = capsys.readouterr().out
    assert "| Grounded preference | 12 | 0.7000 [" in text
    assert "paper: DeepMedix-R1" in text and "0.7708" in text and "0.2292" in text
    assert f"Measured here: {X} 0.7000" in text
    for name in ("analysis.json", "analysis.md", "preference.png"):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "analysis.json").read_text())
    assert saved["criteria"]["grounded_preference"]["preference"] == pytest.approx(0.7)
    assert "0.7708" not in write_analysis(study, out, n_boot=0)["report"]  # only with --paper


def test_kappa_functions_on_textbook_cases():
    # Fleiss (1971)-style check: 3 raters, 4 items, 2 categories
    table = [[3, 0], [0, 3], [2, 1], [1, 2]]
    # P_i = (9-3)/6 = 1, 1, (4+1-3)/6 = 1/3, 1/3 -> P = 2/3; p = (6/12, 6/12) -> Pe = 1/2; kappa = 1/3
    assert fleiss_kappa(table) == pytest.approx(1 / 3)
    assert fleiss_kappa([[2, 0], [1, 0]]) is None  # unequal rater counts
    assert cohen_kappa(["a", "b"], ["a", "b"], ["a", "b"]) == pytest.approx(1.0)
    assert cohen_kappa(["a", "b"], ["b", "a"], ["a", "b"]) == pytest.approx(-1.0)
    assert cohen_kappa([], [], ["a"]) is None
