"""What the stage scripts share: processor set-up, frame check, resume, saving a usable model."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from transformers import AutoProcessor

from data_prep.errors import OpenMedixError
from data_prep.frame import check_processor_frame, read_frame

log = logging.getLogger(__name__)


class FrameMissing(OpenMedixError, FileNotFoundError):
    """A training run on a dataset whose frame is unknown: the message says how to give it."""


class CheckpointError(OpenMedixError, ValueError):
    """output_dir holds checkpoints, none of which can be resumed from: the message names them."""


def load_processor(
    model_path: str,
    dataset_path: str,
    min_pixels: int | None,
    max_pixels: int | None,
    require_frame: bool = False,
):
    """Processor padding on the left (generation) whose resize matches the dataset's frame.

    ``require_frame`` (the training scripts): a dataset without frame.json needs min_pixels and
    max_pixels from the recipe; otherwise the processor would resize with its own defaults, which
    need not be the frame the images and boxes were prepared in."""
    frame = read_frame(dataset_path) or {}
    if require_frame and not frame and not (min_pixels and max_pixels):
        raise FrameMissing(
            f"{Path(dataset_path) / 'frame.json'} not found or without min_pixels/max_pixels: the frame its images "
            "were resized into (and its boxes drawn in) is unknown, and the processor would resize them with "
            "its own defaults, so the boxes would no longer match the image. Make the dataset with a data_prep "
            "converter (it writes frame.json), or give the frame: `min_pixels` and `max_pixels` in the recipe "
            "(`--min_pixels N --max_pixels N`)."
        )
    min_pixels = min_pixels or frame.get("min_pixels")
    max_pixels = max_pixels or frame.get("max_pixels")
    kwargs = {}
    if min_pixels and max_pixels:
        kwargs = {"min_pixels": min_pixels, "max_pixels": max_pixels}
    processor = AutoProcessor.from_pretrained(model_path, **kwargs)
    processor.tokenizer.padding_side = "left"
    check_processor_frame(dataset_path, processor.image_processor)
    return processor


def set_model_init_kwargs(training_args, model_args) -> None:
    """The trainers load the model from its path: ModelConfig's dtype and attention go with it (the
    recipe's own model_init_kwargs, if any, kept)."""
    training_args.model_init_kwargs = {
        **(training_args.model_init_kwargs or {}),
        "dtype": model_args.dtype,
        "attn_implementation": model_args.attn_implementation,
    }


def image_tokens(image_processor, sizes) -> int:
    """Tokens the model sees for images of these (width, height) sizes, already in the frame: one per
    merged patch (sides are multiples of patch x merge: 28 for Qwen2.5-VL, 32 for Qwen3-VL)."""
    factor = getattr(image_processor, "patch_size", 14) * getattr(image_processor, "merge_size", 2)
    return sum((w // factor) * (h // factor) for w, h in sizes)


def _nonempty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why a checkpoint-N folder cannot be resumed from, or None.

    Resuming needs the trainer state (written last: a kill while saving leaves none), the weights and
    the optimizer state. Without weights transformers crashes after "resuming from"; without the
    optimizer (or scheduler) state it silently continues with a fresh one, a different run."""
    if not (ckpt / "trainer_state.json").is_file():
        return "no trainer_state.json: the run died while saving it"
    deepspeed = sorted(d for d in ckpt.glob("global_step*") if d.is_dir())
    if deepspeed:  # DeepSpeed keeps weights and optimizer in its own folder (ZeRO-3: maybe no model file)
        if not any(deepspeed[-1].glob("*model_states.pt")):
            return f"no model states in {deepspeed[-1].name}"
        if not any(deepspeed[-1].glob("*optim_states.pt")):
            return f"no optimizer states in {deepspeed[-1].name}"
        return None
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (ckpt / index).is_file():  # sharded weights: every shard the index names must be there
            try:
                shards = set(json.loads((ckpt / index).read_text())["weight_map"].values())
            except (ValueError, KeyError, AttributeError):
                return f"{index} is not a weight index"
            missing = sorted(s for s in shards if not _nonempty(ckpt / s))
            if missing:
                return f"weight shard {missing[0]} missing ({len(missing)} of {len(shards)})"
            break
    else:
        names = ("model.safetensors", "pytorch_model.bin", "adapter_model.safetensors", "adapter_model.bin")
        fsdp = any(ckpt.glob("pytorch_model_fsdp*"))
        if not fsdp and not any(_nonempty(ckpt / n) for n in names):
            return "no model weights (model.safetensors, an adapter, or a DeepSpeed global_step folder)"
    optimizer = _nonempty(ckpt / "optimizer.pt") or _nonempty(ckpt / "optimizer.bin")
    if not optimizer and not any(d.is_dir() for d in ckpt.glob("optimizer*")):  # FSDP: optimizer_0/
        return (
            "no optimizer state (optimizer.pt): resuming would restart the optimizer from zero "
            "(a run with save_only_model: true cannot be resumed)"
        )
    if not _nonempty(ckpt / "scheduler.pt"):
        return "no scheduler.pt: resuming would restart the learning-rate schedule"
    return None


def last_checkpoint(output_dir: str, resume: bool) -> str | None:
    """The checkpoint to resume from: the newest *complete* checkpoint-N in output_dir (checkpoint_problem).

    An incomplete one is skipped, its reason reported; transformers' get_last_checkpoint would pick it
    and crash, or resume without the optimizer state. If output_dir holds checkpoints and none is
    complete, stop: starting fresh there is the user's call (``resume: false`` or another output_dir)."""
    if not resume or not os.path.isdir(output_dir):
        return None
    ckpts = sorted(
        (p for p in Path(output_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    skipped = []
    for ckpt in ckpts:
        problem = checkpoint_problem(ckpt)
        if problem is None:
            log.info("resuming from %s", ckpt)
            return str(ckpt)
        log.warning("skipping incomplete checkpoint %s: %s", ckpt, problem)
        skipped.append(f"{ckpt.name} ({problem})")
    if skipped:
        raise CheckpointError(
            f"{output_dir} holds checkpoints but none can be resumed from: {'; '.join(skipped)}. "
            "Train into a new `--output_dir`, delete them, or start fresh in this folder with `--resume false` "
            "(`resume: false` in the recipe)."
        )
    return None


def save_final(trainer, processor, output_dir: str, model_args, merge_lora: bool = True) -> None:
    """Save model + processor (+ trainer_state.json). A LoRA/QLoRA run keeps its adapter in output_dir/adapter and,
    by default, writes the merged full model to output_dir so the next stage can load it."""
    if not trainer.accelerator.is_main_process:
        trainer.save_model(output_dir)  # collective under ZeRO-3: every rank must enter it
        return
    if model_args.use_peft and merge_lora:
        adapter_dir = Path(output_dir) / "adapter"
        trainer.save_model(str(adapter_dir))
        processor.save_pretrained(str(adapter_dir))
        merge_adapter(model_args.model_name_or_path, str(adapter_dir), output_dir, model_args.dtype)
    else:
        trainer.save_model(output_dir)
    processor.save_pretrained(output_dir)
    trainer.save_state()  # trainer_state.json: the run's log history, also when no checkpoint was saved
    log.info("saved model and processor to %s", output_dir)


def merge_adapter(base_path: str, adapter_dir: str, out_dir: str, dtype: str | None) -> None:
    """Merge a (Q)LoRA adapter into a full-precision copy of its base model."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    torch_dtype = getattr(torch, dtype) if dtype and dtype not in ("auto", None) else torch.float32
    base = AutoModelForImageTextToText.from_pretrained(base_path, dtype=torch_dtype)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(out_dir)


def end_distributed() -> None:
    """Close the process groups before exit: without it a torchrun rank can abort at shutdown (SIGABRT).

    A colocated vLLM engine made groups of its own; it closes them first (its exit hook then has
    nothing left to do), then the default group goes."""
    import sys

    import torch.distributed as dist

    if "vllm.distributed.parallel_state" in sys.modules:
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
