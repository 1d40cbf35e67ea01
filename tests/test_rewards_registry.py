"""The reward registry, TRL's calling convention, conversational completions, log_metric, the benchmark."""

from __future__ import annotations

import json
import pickle

import pytest

from benchmarks.rewards import main as bench_main
from benchmarks.rewards import make_corpus
from rewards import (
    GROUNDED_SET,
    PAPER_SET,
    REWARD_FUNCS,
    get_reward_funcs,
    register,
    reward_names,
)
from rewards.stats import completion_stats

ALL = [
    "paper_answer",
    "paper_format",
    "paper_coordinate",
    "answer",
    "format",
    "coordinate",
    "grounding",
    "report_labels",
]
TEXT = "<think> The heart is enlarged [40, 60, 200, 220] and [600, 0, 700, 50]. </think>. The answer is: \\boxed{yes}"
COLUMNS = {
    "solution": ["yes"],
    "task": ["vqa"],
    "boxes": [[{"label": "cardiomegaly", "box": [40, 60, 200, 220]}]],
    "width": [448],
    "height": [504],
}


def test_registry_names_and_dunder_names():
    assert sorted(ALL) == reward_names()
    for name, func in zip(ALL, get_reward_funcs(ALL)):
        assert func.__name__ == name  # TRL logs rewards/<__name__>/mean
    assert get_reward_funcs("format") == [REWARD_FUNCS["format"]]


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError) as e:
        get_reward_funcs(["answer", "accuracy"])
    msg = str(e.value)
    assert "'accuracy'" in msg
    assert all(name in msg for name in ALL)


def test_recommended_weights_are_the_recipe_default():
    """A recipe naming only its reward_mode trains with that set's rewards and recommended weights."""
    from types import SimpleNamespace

    from training.grpo_checks import resolve_rewards

    for mode, names, weights in (
        ("paper", list(PAPER_SET), [0.9, 0.1, 1.0]),
        ("grounded", list(GROUNDED_SET), [1.0, 0.2, 0.2, 0.5]),
    ):
        training_args = SimpleNamespace(reward_weights=None)
        funcs = resolve_rewards(SimpleNamespace(reward_mode=mode, reward_funcs=None), training_args)
        assert [f.__name__ for f in funcs] == names
        assert training_args.reward_weights == weights


def test_register_checks_the_name():
    def my_reward(completions, **kwargs):
        return [0.0] * len(completions)

    with pytest.raises(ValueError, match="__name__"):
        register(my_reward, name="other")
    with pytest.raises(ValueError, match="already registered"):
        register(_renamed("answer"))  # a different function under a taken name


def _renamed(name):
    def f(completions, **kwargs):
        return [0.0] * len(completions)

    f.__name__ = name
    return f


@pytest.mark.parametrize("name", ALL)
def test_trl_calling_convention(name):
    """GRPOTrainer passes prompts, completion_ids, every dataset column and its own hooks as kwargs."""
    logged = []
    out = get_reward_funcs([name])[0](
        prompts=[[{"role": "user", "content": "Is there cardiomegaly?"}]],
        completions=[[{"role": "assistant", "content": TEXT}]],
        completion_ids=[[1, 2, 3]],
        trainer_state=object(),
        log_extra=lambda column, values: None,
        log_metric=lambda n, v: logged.append((n, v)),
        image=["img.png"],
        **COLUMNS,
    )
    assert len(out) == 1
    assert out[0] is None or isinstance(out[0], float)


@pytest.mark.parametrize("name", ALL)
def test_conversational_equals_plain(name):
    f = get_reward_funcs([name])[0]
    plain = f([TEXT], **COLUMNS)
    assert f([[{"role": "assistant", "content": TEXT}]], **COLUMNS) == plain
    assert f([[{"role": "assistant", "content": [{"type": "text", "text": TEXT}]}]], **COLUMNS) == plain


@pytest.mark.parametrize("name", ALL)
def test_picklable(name):
    f = get_reward_funcs([name])[0]
    assert pickle.loads(pickle.dumps(f)) is f


def test_missing_column_is_named():
    with pytest.raises(ValueError, match="'solution'"):
        get_reward_funcs(["answer"])[0]([TEXT], task=["vqa"])
    with pytest.raises(ValueError, match="'boxes'"):
        get_reward_funcs(["grounding"])[0]([TEXT])


def test_log_metric_from_the_coordinate_rewards():
    texts = [
        TEXT,  # 2 boxes, one outside the 448-wide frame
        "<think> Both lungs are clear, no focal finding. </think> \\boxed{no}",  # no boxes
        "no think block \\boxed{no}",
    ]
    cols = {k: v * 3 for k, v in COLUMNS.items()}
    for name in ("coordinate", "paper_coordinate"):
        logged = {}
        get_reward_funcs([name])[0](texts, log_metric=lambda n, v, d=logged: d.setdefault(n, v), **cols)
        assert logged["boxes/per_completion"] == pytest.approx(2 / 3)
        assert logged["boxes/invalid_rate"] == pytest.approx(1 / 2)
        assert logged["boxes/duplicate_rate"] == 0.0
        assert logged["think/missing_rate"] == pytest.approx(1 / 3)
        # whitespace-separated words: 13 (each box number counts) + 7 + 0 (no think block)
        assert logged["think/length_words"] == pytest.approx((13 + 7) / 3)
        assert all(isinstance(v, float) for v in logged.values())
    # without log_metric nothing is logged and nothing breaks; without boxes the rates are left out
    assert get_reward_funcs(["coordinate"])[0](texts, **cols)
    assert "boxes/invalid_rate" not in completion_stats(texts[1:], [448] * 2, [504] * 2)


def test_paper_coordinate_logs_without_a_frame():
    logged = {}
    get_reward_funcs(["paper_coordinate"])[0]([TEXT], log_metric=lambda n, v: logged.setdefault(n, v))
    assert logged["boxes/invalid_rate"] == pytest.approx(1 / 2)  # 512 x 512 frame: [600, ...] is outside


def test_bench_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench_main(["--n", "160", "--repeat", "1", "--no_pin", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["rewards"]) == {*PAPER_SET, *GROUNDED_SET}  # the benchmark times the default sets
    assert set(result["sets"]) == {"paper", "grounded"}
    assert result["sets"]["paper"]["per_s"] > 0
    assert "set: grounded" in capsys.readouterr().out


def test_corpus_is_deterministic():
    assert make_corpus(50, seed=1) == make_corpus(50, seed=1)
    assert make_corpus(50, seed=1) != make_corpus(50, seed=2)
    tasks = {r["task"] for r in make_corpus(400)}
    assert tasks == {"report_findings", "report_impression", "vqa", "classification", "grounding"}
