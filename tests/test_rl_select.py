"""evaluation.rl_select: difficulty pre-selection for GRPO (the rule, a run, a killed run, applying it).

The tiny untrained model never writes a boxed answer, so every real reward term would be 0 and every
group flat. The runs here replace the registry's ``answer`` with ``words_answer`` (the completion's
word count mod 5, over 4: it differs between samples) so that groups differ and every category
shows up; format, coordinate and grounding stay the real ones, read from the demo recipe."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

import pytest
import torch
import yaml

from data_prep.errors import OpenMedixError
from data_prep.io import read_records
from data_prep.trl_dataset import grpo_dataset
from evaluation import rl_select as R
from rewards import registry
from rewards.inputs import texts_of
from tests.conftest import ROOT, run_in_process, script_env

RECIPE = ROOT / "recipes" / "demo" / "grpo.yaml"
K, LIMIT, TOKENS, BATCH = 4, 10, 24, 3
# the runs call `python -m evaluation.rl_select` in process (runpy) while this module imports it too
pytestmark = pytest.mark.filterwarnings("ignore:'evaluation.rl_select' found in sys.modules:RuntimeWarning")
slow = pytest.mark.slow


def words_answer(completions, **kwargs) -> list[float]:
    """Stand-in answer term: 1.0 (a pass) when the word count is 4 mod 5."""
    return [(len(t.split()) % 5) / 4 for t in texts_of(completions)]


words_answer.__name__ = "answer"


def select_args(model, data, out, *extra) -> list[str]:
    return [
        "--recipe", str(RECIPE), "--model_name_or_path", str(model), "--dataset_name", str(data),
        "--out", str(out), "--k", str(K), "--max_new_tokens", str(TOKENS), "--limit", str(LIMIT),
        "--batch_size", str(BATCH), "--no_progress", *extra,
    ]  # fmt: skip


def run_select(*args):
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(registry.REWARD_FUNCS, "answer", words_answer)
        return run_in_process("evaluation.rl_select", *args)


def scores(out) -> list[dict]:
    return [json.loads(line) for line in (out / R.SCORES).read_text().splitlines()]


@pytest.fixture(scope="module")
def full_run(tiny_dir, phantom_dir, tmp_path_factory):
    """One uninterrupted run: (its folder, its stdout)."""
    out = tmp_path_factory.mktemp("rl-select") / "full"
    proc = run_select(*select_args(tiny_dir, phantom_dir, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


# ----------------------------------------------------------------------------- the rule, no model


def test_rule_keeps_groups_whose_totals_differ_inside_the_window():
    weights = [1.0, 0.2, 0.5]  # answer, format, grounding
    mixed = R.group_scores(
        {
            "answer": [1.0, 0.0, 1.0, 0.0],
            "format": [1.0, 1.0, 0.0, 1.0],
            "grounding": [None, None, 0.4, None],
        },
        weights,
        "answer",
        1.0,
    )
    assert mixed["rewards"] == [1.2, 0.2, 1.2, 0.2]  # None left out of the sum, as TRL's nansum
    assert mixed["pass_rate"] == 0.5 and mixed["spread"] == pytest.approx(0.5)
    # every answer wrong, the format differs: GRPO still has an advantage, so it is kept by default
    failing = R.group_scores({"answer": [0.0] * 4, "format": [1.0, 0.0, 0.0, 0.0]}, [1.0, 0.2], "answer", 1.0)
    assert failing["pass_rate"] == 0.0 and failing["spread"] > 0
    # a partial answer plus the format term ties a right answer without it: no advantage -> flat
    tie = R.group_scores({"answer": [1.0, 0.8], "format": [0.0, 1.0]}, [1.0, 0.2], "answer", 1.0)
    assert tie["pass_rate"] == 0.5 and tie["spread"] < R.SPREAD_EPS
    solved = R.group_scores({"answer": [1.0] * 4, "format": [1.0] * 4}, [1.0, 0.2], "answer", 1.0)
    unscorable = R.group_scores({"grounding": [None, None]}, [1.0], None, 1.0)
    assert unscorable == {"rewards": [None, None], "answer": [None, None], "pass_rate": None, "spread": 0.0}

    default = R.Window()
    assert R.decide(mixed["pass_rate"], mixed["spread"], default) == "kept"
    assert R.decide(failing["pass_rate"], failing["spread"], default) == "kept"
    assert R.decide(tie["pass_rate"], tie["spread"], default) == "flat"
    assert R.decide(solved["pass_rate"], solved["spread"], default) == "flat"
    narrow = R.Window(0.25, 0.75)  # both ends included
    assert R.decide(failing["pass_rate"], failing["spread"], narrow) == "too_hard"
    assert R.decide(solved["pass_rate"], solved["spread"], narrow) == "too_easy"
    assert R.decide(0.25, 0.1, narrow) == "kept" and R.decide(0.75, 0.1, narrow) == "kept"
    assert R.decide(0.74, 0.0, narrow) == "flat"
    assert R.decide(None, 0.3, narrow) == "kept"  # no answer term: the window does not apply
    with pytest.raises(R.SelectionError, match="min_pass_rate <= max_pass_rate"):
        R.Window(0.8, 0.2)

    rows = [
        {"id": "a", "task": "vqa", **mixed},
        {"id": "b", "task": "vqa", **solved},
        {"id": "c", "task": "grounding", **failing},
    ]
    ledger, kept = R.build_ledger(rows, narrow)
    assert kept == ["a"]
    assert ledger["total"] == {"scored": 3, "kept": 1, "too_easy": 1, "too_hard": 1, "flat": 0}
    assert ledger["by_task"]["vqa"] == {"scored": 2, "kept": 1, "too_easy": 1, "too_hard": 0, "flat": 0}


def test_real_rewards_score_a_group_as_grpo_would(phantom_dir):
    """The demo recipe's real terms on a phantom grounding row: right box vs wrong box vs no format."""
    rec = next(r for r in read_records(phantom_dir, split="train") if r["task"] == "grounding" and r["boxes"])
    row = grpo_dataset([rec], phantom_dir)[0]
    box = rec["boxes"][0]["box"]
    cite = f"[{', '.join(str(int(v)) for v in box)}]"
    texts = [
        f"<think> the {rec['boxes'][0]['label']} lies at {cite} in this image </think> \\boxed{{{cite}}}",
        "<think> nothing to see on this image here </think> \\boxed{[0, 0, 5, 5]}",
        f"the answer is \\boxed{{{cite}}}",
    ]
    funcs = registry.get_reward_funcs(["answer", "format", "coordinate", "grounding"])
    terms = R.score_completions(row, texts, None, funcs)
    assert terms["answer"][0] == pytest.approx(1.0) and terms["answer"][1] < 0.5 and terms["answer"][2] == 1.0
    assert terms["format"] == [1.0, 1.0, 0.0]
    assert terms["grounding"][2] == 0.0 and terms["grounding"][0] > terms["grounding"][1]
    weights = [1.0, 0.2, 0.0, 0.5]
    group = R.group_scores(terms, weights, "answer", 1.0)
    assert group["rewards"][0] == pytest.approx(1.0 + 0.2 + 0.5 * terms["grounding"][0])
    assert group["pass_rate"] == pytest.approx(2 / 3)
    assert group["spread"] == pytest.approx(statistics.pstdev(group["rewards"]))


def test_seeded_sampler_draws_the_softmax_per_row_whatever_the_batch():
    logits = torch.tensor([2.0, 1.0, 0.0, float("-inf")])
    warpers = R._warpers(R.SelectOptions("r", "o", "m", "d", temperature=0.5))
    n = 4000
    sampler = R._seeded_sampler(list(range(n)), warpers)
    drawn = sampler(None, logits.repeat(n, 1))
    assert torch.isinf(drawn).sum(dim=1).tolist() == [3] * n  # one-hot: generate can only pick it
    freq = torch.bincount(drawn.argmax(dim=1), minlength=4) / n
    assert torch.allclose(freq, torch.softmax(logits / 0.5, dim=0), atol=0.03)
    assert freq[3] == 0
    # a row's draws depend on its seed only, not on the rows beside it
    alone = R._seeded_sampler([7], warpers)
    batched = R._seeded_sampler([3, 7, 11], warpers)
    for _ in range(20):
        uniform = torch.zeros(1, 50)
        assert alone(None, uniform).argmax() == batched(None, uniform.repeat(3, 1))[1].argmax()
    top1 = R._seeded_sampler([1, 2, 3], R._warpers(R.SelectOptions("r", "o", "m", "d", top_k=1)))
    assert top1(None, logits.repeat(3, 1)).argmax(dim=1).tolist() == [0, 0, 0]


# ----------------------------------------------------------------------------- a run


@slow
def test_run_scores_every_prompt_and_selects_the_kept_rows(full_run, tiny_dir, phantom_dir):
    out, stdout = full_run
    rows = scores(out)
    recipe = yaml.safe_load(RECIPE.read_text())
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == LIMIT
    assert {r["task"] for r in rows} <= set(recipe["tasks"])
    for row in rows:
        assert len(row["rewards"]) == K and list(row["terms"]) == recipe["reward_funcs"]
        terms = list(zip(*row["terms"].values()))
        assert row["rewards"] == [R.total_reward(list(t), recipe["reward_weights"]) for t in terms]
        assert row["answer"] == row["terms"]["answer"]
        assert row["pass_rate"] == sum(a >= 1.0 for a in row["answer"]) / K
        assert row["spread"] == pytest.approx(statistics.pstdev(row["rewards"]))
    assert len({tuple(r["answer"]) for r in rows}) > 1  # the samples differ

    ledger = json.loads((out / R.LEDGER).read_text())
    selection = json.loads((out / R.SELECTION).read_text())
    total = ledger["total"]
    assert total["scored"] == LIMIT == sum(total[c] for c in R.CATEGORIES)
    assert sum(t["scored"] for t in ledger["by_task"].values()) == LIMIT
    kept = [r["id"] for r in rows if R.decide(r["pass_rate"], r["spread"], R.Window()) == "kept"]
    assert selection["ids"] == kept and selection["kept"] == total["kept"] == len(kept) > 0
    assert selection["dataset"] == str(phantom_dir.resolve()) and selection["split"] == "train"
    assert selection["checkpoint"] == str(tiny_dir.resolve()) and selection["k"] == K
    assert selection["reward_funcs"] == recipe["reward_funcs"]
    assert selection["reward_weights"] == recipe["reward_weights"]
    assert selection["scored"] == LIMIT and selection["unscored"] == selection["prompts"] - LIMIT
    assert f"{'total':<22}{LIMIT:>10}{total['kept']:>10}" in stdout


@slow
def test_rerun_decides_again_without_sampling_and_refuses_other_settings(full_run, tmp_path):
    src, _ = full_run
    out = tmp_path / "again"
    out.mkdir()
    for name in (R.SCORES, R.SETTINGS):
        (out / name).write_bytes((src / name).read_bytes())
    before = (out / R.SCORES).read_bytes()
    args = select_args(*_model_and_data(src), out)
    proc = run_select(*args, "--min_pass_rate", "0.25", "--max_pass_rate", "0.5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / R.SCORES).read_bytes() == before  # nothing sampled again
    rows = scores(out)
    ledger = json.loads((out / R.LEDGER).read_text())["total"]
    assert ledger["too_hard"] == sum(r["pass_rate"] < 0.25 for r in rows)
    assert ledger["too_easy"] == sum(r["pass_rate"] > 0.5 for r in rows)
    assert ledger["too_hard"] + ledger["too_easy"] > 0
    assert json.loads((out / R.SELECTION).read_text())["window"] == {
        "min_pass_rate": 0.25,
        "max_pass_rate": 0.5,
    }

    refused = run_select(*args, "--k", "2")
    assert refused.returncode == 1
    assert "holds scores made with other settings" in refused.stderr and "k: 4 -> 2" in refused.stderr
    assert (out / R.SCORES).read_bytes() == before


def _model_and_data(out) -> tuple[str, str]:
    settings = json.loads((out / R.SETTINGS).read_text())
    return settings["checkpoint"], settings["dataset"]


KILLED_RUN = """
import sys
from rewards import registry
from tests.test_rl_select import words_answer
from evaluation.rl_select import main
registry.REWARD_FUNCS["answer"] = words_answer
main(sys.argv[1:])
"""


@slow
def test_killed_run_resumes_to_the_uninterrupted_scores(full_run, tiny_dir, phantom_dir, tmp_path):
    out = tmp_path / "killed"
    args = select_args(tiny_dir, phantom_dir, out)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, *args],
        cwd=ROOT,
        env=script_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    path, deadline = out / R.SCORES, time.time() + 120
    while not (path.exists() and path.read_bytes().count(b"\n") >= BATCH):
        assert proc.poll() is None and time.time() < deadline, "no scores before the run ended"
        time.sleep(0.02)
    proc.kill()  # SIGKILL: no clean shutdown
    proc.wait()
    lines = path.read_bytes().splitlines(keepends=True)
    assert BATCH <= len(lines) < LIMIT, "the run finished before it was killed"
    # a kill in the middle of a write: the last line torn in half, its batch now partly scored (the
    # resumed run generates that batch whole again and writes only the missing prompt)
    path.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    resumed = run_select(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "dropped 1 broken line(s)" in resumed.stderr and "resuming:" in resumed.stderr
    rows = scores(out)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == LIMIT  # every prompt exactly once
    full = {r["id"]: r for r in scores(full_run[0])}
    assert {r["id"]: r for r in rows} == full  # the same samples, the same scores


# ----------------------------------------------------------------------------- applying it


@slow
def test_apply_selection_keeps_the_ids_and_refuses_another_dataset(full_run, phantom_dir, tmp_path):
    out, _ = full_run
    selection = json.loads((out / R.SELECTION).read_text())
    records = read_records(phantom_dir, split="train")
    kept = R.apply_selection(records, out / R.SELECTION, str(phantom_dir), "train")
    assert [r["id"] for r in kept] == selection["ids"]
    assert [r["id"] for r in kept] == [r["id"] for r in records if r["id"] in set(selection["ids"])]

    with pytest.raises(OpenMedixError, match="split 'train', this run trains on 'test'"):
        R.apply_selection(records, out / R.SELECTION, str(phantom_dir), "test")
    other = tmp_path / "other"
    other.mkdir()
    lines = (phantom_dir / "records.jsonl").read_text().splitlines()
    (other / "records.jsonl").write_text("\n".join(lines[1:]) + "\n")  # the same ids but one
    with pytest.raises(OpenMedixError, match="holds other records"):
        R.apply_selection(records, out / R.SELECTION, str(other), "train")
    (other / "records.jsonl").write_bytes((phantom_dir / "records.jsonl").read_bytes())
    moved = R.apply_selection(records, out / R.SELECTION, str(other), "train")  # the same records elsewhere
    assert moved == kept
    fewer = [r for r in records if r["id"] != selection["ids"][0]]
    with pytest.raises(OpenMedixError, match="names 1 id"):
        R.apply_selection(fewer, out / R.SELECTION, str(phantom_dir), "train")
    with pytest.raises(FileNotFoundError, match="not found"):
        R.apply_selection(records, tmp_path / "missing.json", str(phantom_dir), "train")
