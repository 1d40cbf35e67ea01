"""The script arguments every stage shares, on TRL's ``ScriptArguments``.

TRL's example scripts take ``dataset_name`` / ``dataset_train_split`` / ``dataset_test_split``; the
stages here take the same keys, with ``dataset_name`` the folder a ``data_prep`` converter wrote
(records.jsonl, images, frame.json) rather than a hub id, because the images and boxes must stay in
the frame that folder records. ``sft.py`` and ``grpo.py`` add their own fields to this base.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import ScriptArguments

from training.cli import RecipeError


@dataclass
class StageArguments(ScriptArguments):
    dataset_name: str | None = field(
        default=None, metadata={"help": "dataset folder with records.jsonl (+ images, frame.json)"}
    )
    dataset_test_split: str = field(
        default="validation", metadata={"help": "split evaluated during training"}
    )
    tasks: list[str] | None = field(default=None, metadata={"help": "keep only these tasks (default all)"})
    max_train_samples: int | None = None
    max_eval_samples: int | None = field(
        default=64, metadata={"help": "records of dataset_test_split evaluated (with eval_strategy)"}
    )
    min_pixels: int | None = field(default=None, metadata={"help": "default: the dataset's frame.json"})
    max_pixels: int | None = field(default=None, metadata={"help": "default: the dataset's frame.json"})
    skip_bad_rows: bool = False
    model_family: str | None = field(
        default=None,
        metadata={
            "help": "qwen2.5-vl | qwen3-vl (data_prep.families); checked against the model and the data"
        },
    )
    resume: bool = field(default=True, metadata={"help": "continue from the last checkpoint in output_dir"})
    merge_lora: bool = field(default=True, metadata={"help": "LoRA/QLoRA: save the merged model too"})

    def __post_init__(self):
        if not self.dataset_name:
            raise RecipeError(
                "dataset_name is required: the dataset folder a data_prep converter wrote "
                "(e.g. `dataset_name: outputs/phantom` in the recipe, or --dataset_name DIR)"
            )
        # TRL's hub-loading keys: a dataset here is a folder of records, not a `datasets` config
        if self.dataset_config is not None or self.dataset_streaming:
            raise RecipeError(
                "dataset_config and dataset_streaming are TRL's keys for hub datasets; the stages read "
                "the folder in dataset_name (records.jsonl): remove them from the recipe"
            )
