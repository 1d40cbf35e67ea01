"""Before a GPU launch: are the GPUs, the input model and the dataset there?

    python -m training.preflight --config recipes/qwen2.5-vl-7b/coldstart.yaml --nproc 8 \\
        [--accelerate_config recipes/accelerate/zero3.yaml] [recipe flags ...]

``make sft`` / ``make coldstart`` / ``make grpo`` with a SCALE other than demo run this once before
``accelerate launch`` starts NPROC processes: on a machine without the GPUs, or without the previous
stage's model, each of those processes would die with its own long traceback. Here the first problem
found is one line on stderr, saying what is missing and what to run, and the exit status is 2:

  - GPUs: torch must see at least NPROC GPUs (NPROC / num_machines of the accelerate config), unless
    the recipe or the accelerate config says use_cpu;
  - model_name_or_path: a local path (under outputs/, or any path that is not an ``org/name`` hub id)
    must hold a model (config.json), else the stage whose recipe writes it is named; a hub id must be
    in the local Hugging Face cache when HF_HUB_OFFLINE=1 (the Makefile's default);
  - dataset_name: must hold records.jsonl, else the command that builds it is named.

Recipe flags after the options (the Makefile's ARGS) override the YAML's model_name_or_path,
dataset_name and use_cpu, as they do in the recipe; other flags are ignored.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import yaml

from training.cli import RecipeError, read_config

RECORDS = "records.jsonl"  # data_prep.io.RECORDS (not imported: this runs before anything heavy)
MIXTURES = Path("recipes", "mixtures")  # as the Makefile runs it: from the repository root
TRUE = ("1", "true", "yes", "y", "t", "on")


def stage_of(recipe: Path) -> str:
    """The make target of a recipe file: sft, coldstart or grpo."""
    for stage in ("grpo", "coldstart"):
        if recipe.stem.startswith(stage):
            return stage
    return "sft"


def make_command(recipe: Path) -> str:
    """The command that runs ``recipe`` (recipes/SCALE/STAGE.yaml), as the README's make targets say."""
    scale, stage = recipe.parent.name, stage_of(recipe)
    if recipe.stem == stage:
        return f"make {stage} SCALE={scale}"
    if stage == "grpo":
        return f"make grpo SCALE={scale} GRPO_RECIPE={recipe.stem}"
    # no make target runs it (e.g. sft-lora.yaml): the launch its header shows
    return f"accelerate launch --config_file recipes/accelerate/zero3.yaml -m recipes.sft --config {recipe}"


def writer_of(model: str, recipe: Path) -> Path | None:
    """The recipe beside ``recipe`` whose output_dir is ``model``: the stage that makes it."""
    target = os.path.normpath(model)
    for other in sorted(recipe.parent.glob("*.yaml")):
        try:
            out = (yaml.safe_load(other.read_text(encoding="utf-8")) or {}).get("output_dir")
        except (yaml.YAMLError, OSError, AttributeError):
            continue
        if out and os.path.normpath(str(out)) == target and other.resolve() != recipe.resolve():
            return other
    return None


def looks_local(model: str) -> bool:
    """A path rather than a hub id (``org/name``: exactly one slash, no leading dot, slash or tilde)."""
    return model.startswith(("outputs/", ".", "/", "~")) or model.count("/") != 1 or Path(model).exists()


def in_hub_cache(model: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(model, "config.json"), str)


def model_problem(model: str | None, recipe: Path) -> str | None:
    if not model:
        return f"{recipe}: model_name_or_path is not set"
    path = Path(model).expanduser()
    if (path / "config.json").is_file():
        return None
    if looks_local(model):
        writer = writer_of(model, recipe)
        run = f"run `{make_command(writer)}` first" if writer else "run the stage that writes it first"
        if path.is_dir():
            return (
                f"model {model} holds no finished model (no config.json): {run} (it resumes from checkpoints)"
            )
        return f"model {model} not found: {run}"
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE and not in_hub_cache(model):
        return (
            f"model {model} is not in the Hugging Face cache and HF_HUB_OFFLINE=1: "
            f"download it once with `HF_HUB_OFFLINE=0 .venv/bin/hf download {model}`"
        )
    return None


def dataset_problem(dataset: str | None, recipe: Path) -> str | None:
    if not dataset:
        return f"{recipe}: dataset_name is not set"
    path = Path(dataset).expanduser()
    if (path / RECORDS).is_file():
        return None
    mixture = MIXTURES / f"{path.parent.name}.yaml"
    if mixture.is_file():  # data/mixtures/NAME/STAGE: a stage of the mixture NAME, written with --jsonl
        hint = f"build it with `python -m data_prep.mixture --config {mixture} --out {path.parent} --jsonl`"
    elif "coldstart" in path.name:
        hint = "synthesise it with `make coldstart-data` (README: Cold-start data)"
    else:
        hint = "convert a dataset into it (README: Real datasets) or point dataset_name at one"
    return f"dataset {dataset} has no {RECORDS}: {hint}"


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def gpu_problem(nproc: int, recipe: Path, accelerate: dict, use_cpu: bool) -> str | None:
    if use_cpu or accelerate.get("use_cpu") is True:
        return None
    machines = accelerate.get("num_machines")
    machines = machines if isinstance(machines, int) and machines > 1 else 1
    need = math.ceil(nproc / machines)  # accelerate's num_processes counts every machine's
    have = gpu_count()
    if have >= need:
        return None
    return (
        f"{recipe} needs {need} GPU(s) here ({nproc} processes) but torch sees {have}: run it on a machine "
        f"with {need} GPUs (or set NPROC), or try the stage on CPU with `make {stage_of(recipe)} SCALE=demo`"
    )


def overrides(flags: list[str]) -> dict:
    """The recipe flags that change what is checked (argparse, as HfArgumentParser reads them)."""
    ap = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    ap.add_argument("--model_name_or_path")
    ap.add_argument("--dataset_name")
    ap.add_argument("--use_cpu", nargs="?", const="true")
    known, _ = ap.parse_known_args(flags)
    return {k: v for k, v in vars(known).items() if v is not None}


def problem(
    recipe: Path, nproc: int, flags: list[str] = (), accelerate_config: Path | None = None
) -> str | None:
    """The first thing missing for launching ``recipe`` on ``nproc`` processes, as one line, or None."""
    try:
        config = read_config(recipe) | overrides(list(flags))
        accelerate = read_config(accelerate_config) if accelerate_config else {}
    except RecipeError as e:
        return str(e)
    use_cpu = str(config.get("use_cpu", False)).strip().lower() in TRUE
    return (
        gpu_problem(nproc, recipe, accelerate, use_cpu)
        or model_problem(config.get("model_name_or_path"), recipe)
        or dataset_problem(config.get("dataset_name"), recipe)
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m training.preflight",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    ap.add_argument("--config", required=True, type=Path, help="the recipe YAML")
    ap.add_argument("--nproc", required=True, type=int, help="processes accelerate will start (NPROC)")
    ap.add_argument("--accelerate_config", type=Path, help="accelerate config (its num_machines, use_cpu)")
    args, flags = ap.parse_known_args(argv)
    found = problem(args.config, args.nproc, flags, args.accelerate_config)
    if found:
        print(f"preflight: {found}", file=sys.stderr)
        raise SystemExit(2)
    print(f"preflight: {args.config} on {args.nproc} process(es): GPUs, model and dataset found")


if __name__ == "__main__":
    main()
