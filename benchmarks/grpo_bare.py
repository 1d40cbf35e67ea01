"""The baseline for `make bench-grpo`: a bare TRL GRPOTrainer script, nothing of ours but the data.

Same tiny model, same phantom prompts (read with plain json), same reward functions and the
same GRPOConfig as recipes/demo/grpo.yaml, so the difference in step time and peak memory is
the cost of our recipe (row checks, prompt-length filter, vLLM guard, reward registry).

    python -m benchmarks.grpo_bare --model outputs/demo/coldstart --data outputs/phantom --max_steps 10
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from datasets import Dataset, Image, Sequence
from transformers import AutoProcessor
from trl import GRPOConfig, GRPOTrainer

from data_prep.prompts import REASONING_INSTRUCTION
from rewards.grounded import answer, coordinate, format, grounding  # noqa: A004 - TRL reward names


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--output_dir", default="/tmp/bench-grpo-bare")
    ap.add_argument("--max_steps", type=int, default=10)
    ap.add_argument("--recipe", default="recipes/demo/grpo.yaml")
    args = ap.parse_args()

    recipe = yaml.safe_load(Path(args.recipe).read_text())
    tasks = set(recipe["tasks"])
    rows = []
    for line in open(Path(args.data) / "records.jsonl"):
        r = json.loads(line)
        if r["split"] == "train" and r["task"] in tasks:
            rows.append(
                {
                    "prompt": [{"role": "user", "content": f"{r['question']}\n\n{REASONING_INSTRUCTION}"}],
                    "images": [str(Path(args.data) / r["image"])],
                    "solution": r["answer"],
                    "boxes": [{"label": b["label"], "box": [float(v) for v in b["box"]]} for b in r["boxes"]],
                    "width": r["width"],
                    "height": r["height"],
                    "task": r["task"],
                }
            )
    dataset = Dataset.from_list(rows).cast_column("images", Sequence(Image()))
    processor = AutoProcessor.from_pretrained(args.model)
    processor.tokenizer.padding_side = "left"
    keys = [
        "use_cpu", "bf16", "reward_weights", "num_generations", "per_device_train_batch_size",
        "max_completion_length", "temperature", "beta", "epsilon", "epsilon_high", "loss_type",
        "learning_rate", "lr_scheduler_type", "seed",
    ]  # fmt: skip
    config = GRPOConfig(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        **{k: recipe[k] for k in keys},
    )
    trainer = GRPOTrainer(
        model=args.model,
        reward_funcs=[answer, format, coordinate, grounding],
        args=config,
        train_dataset=dataset,
        processing_class=processor,
    )
    trainer.train()


if __name__ == "__main__":
    main()
