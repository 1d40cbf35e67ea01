"""Recipe parsing errors as one line (issue #24): a YAML key typo, a broken YAML file, a value of the
wrong type, an unknown flag. training.cli.parse_recipe over TrlParser and the recipes' real dataclasses."""

from __future__ import annotations

from pathlib import Path

import pytest
from trl import GRPOConfig, ModelConfig, SFTConfig, TrlParser

from recipes.grpo import GRPOScriptArguments
from recipes.sft import SFTScriptArguments
from tests.conftest import ROOT
from training.cli import RecipeError, check_config, parse_recipe, run_stage

DEMO_SFT = ROOT / "recipes" / "demo" / "sft.yaml"
RECIPES = sorted(
    p for p in (ROOT / "recipes").glob("*/*.yaml") if p.parent.name not in ("accelerate", "mixtures")
)


def parser_for(recipe: Path) -> TrlParser:
    if recipe.stem.startswith("grpo"):
        return TrlParser((GRPOScriptArguments, GRPOConfig, ModelConfig))
    return TrlParser((SFTScriptArguments, SFTConfig, ModelConfig))


def exit_message(parser, argv) -> str:
    """What a stage script prints when the recipe is refused (main never runs)."""
    with pytest.raises(RecipeError):
        parse_recipe(parser, argv)
    with pytest.raises(SystemExit) as e:
        run_stage(lambda *parsed: pytest.fail("main ran on a refused recipe"), parser, argv)
    message = str(e.value.code)
    assert "\n" not in message and "Traceback" not in message
    return message


def demo_with(tmp_path: Path, old: str, new: str) -> Path:
    text = DEMO_SFT.read_text()
    assert old in text
    path = tmp_path / "sft.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_recipe_passes_the_checks(recipe):
    assert check_config(parser_for(recipe), recipe)["output_dir"]


def test_demo_recipe_parses_as_before(monkeypatch):
    monkeypatch.delenv("OPENMEDIX_DEBUG", raising=False)
    script, training, model = parse_recipe(
        parser_for(DEMO_SFT), ["--config", str(DEMO_SFT), "--max_steps", "3"]
    )
    assert script.dataset_name == "outputs/phantom" and training.max_steps == 3 and training.use_cpu
    assert training.per_device_train_batch_size == 8 and model.model_name_or_path == "outputs/tiny-qwen2.5-vl"


def test_a_key_typo_names_the_key_the_file_and_the_likely_key(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENMEDIX_DEBUG", raising=False)
    path = demo_with(tmp_path, "per_device_train_batch_size:", "per_device_train_batchsize:")
    message = exit_message(parser_for(path), ["--config", str(path)])
    assert message.startswith(f"{path}: unknown key(s) 'per_device_train_batchsize'")
    assert "(did you mean 'per_device_train_batch_size'?)" in message
    message = exit_message(parser_for(DEMO_SFT), ["--config", str(DEMO_SFT), "--learnig_rate", "1e-5"])
    assert message.startswith("unknown flag(s) --learnig_rate (did you mean '--learning_rate'?)")


def test_a_broken_yaml_file_names_file_and_line(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENMEDIX_DEBUG", raising=False)
    path = demo_with(tmp_path, "learning_rate:", "tasks: [vqa, grounding\nlearning_rate:")
    line = path.read_text().splitlines().index("tasks: [vqa, grounding") + 2  # where the parser gives up
    message = exit_message(parser_for(path), ["--config", str(path)])
    assert message.startswith(f"{path}:{line}:") and "not valid YAML" in message
    assert exit_message(parser_for(path), ["--config", str(tmp_path / "sfy.yaml")]) == (
        f"{tmp_path / 'sfy.yaml'}: no such recipe file (did you mean {path}?)"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("8.5", "a whole number, got 8.5"),
        ("true", "a whole number, got True"),
        ("eight", "a whole number, got 'eight'"),
    ],
)
def test_a_value_of_the_wrong_type_names_key_and_type(tmp_path, monkeypatch, value, expected):
    monkeypatch.delenv("OPENMEDIX_DEBUG", raising=False)
    path = demo_with(tmp_path, "per_device_train_batch_size: 8", f"per_device_train_batch_size: {value}")
    message = exit_message(parser_for(path), ["--config", str(path)])
    assert message == f"{path}: per_device_train_batch_size: expected {expected}"


def test_other_types_and_the_dataclasses_own_checks(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENMEDIX_DEBUG", raising=False)
    path = demo_with(tmp_path, 'eval_strategy: "no"', "eval_strategy: no")
    assert "eval_strategy: expected one of no, steps, epoch, got False (YAML reads" in exit_message(
        parser_for(path), ["--config", str(path)]
    )
    path = demo_with(tmp_path, "learning_rate: 3.0e-3", "learning_rate: fast")
    assert exit_message(parser_for(path), ["--config", str(path)]).endswith(
        "learning_rate: expected a number, got 'fast'"
    )
    # a value only the dataclass refuses (TrainingArguments.__post_init__): still one line, file and flags named
    message = exit_message(parser_for(DEMO_SFT), ["--config", str(DEMO_SFT), "--warmup_steps", "-1"])
    assert message.startswith(f"{DEMO_SFT} with flags --warmup_steps: warmup_steps")  # transformers words it


def test_grpo_recipes_too_and_the_debug_switch_shows_the_traceback(tmp_path, monkeypatch):
    grpo = ROOT / "recipes" / "demo" / "grpo.yaml"
    path = tmp_path / "grpo.yaml"
    path.write_text(grpo.read_text() + "\nnum_generation: 4\n")
    message = exit_message(parser_for(path), ["--config", str(path)])
    assert "unknown key(s) 'num_generation' (did you mean 'num_generations'?)" in message
    monkeypatch.setenv("OPENMEDIX_DEBUG", "1")
    with pytest.raises(ValueError, match="num_generation"):
        parse_recipe(parser_for(path), ["--config", str(path)])
