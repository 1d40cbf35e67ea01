"""What the stage scripts share: processor set-up, frame check, resume, saving a usable model."""

from __future__ import annotations

import os
from pathlib import Path

from transformers import AutoProcessor

from data_prep.frame import check_processor_frame, read_frame


def load_processor(model_path: str, dataset_path: str, min_pixels: int | None, max_pixels: int | None):
    """Processor padding on the left (generation) whose resize matches the dataset's frame."""
    frame = read_frame(dataset_path) or {}
    min_pixels = min_pixels or frame.get("min_pixels")
    max_pixels = max_pixels or frame.get("max_pixels")
    kwargs = {}
    if min_pixels and max_pixels:
        kwargs = {"min_pixels": min_pixels, "max_pixels": max_pixels}
    processor = AutoProcessor.from_pretrained(model_path, **kwargs)
    processor.tokenizer.padding_side = "left"
    check_processor_frame(dataset_path, processor.image_processor)
    return processor


def last_checkpoint(output_dir: str, resume: bool) -> str | None:
    """The checkpoint to resume from: the newest *complete* checkpoint-N in output_dir.

    A run killed while saving leaves a checkpoint folder without trainer_state.json (written
    last); transformers' get_last_checkpoint would pick it and crash, so we skip it."""
    if not resume or not os.path.isdir(output_dir):
        return None
    ckpts = sorted(
        (p for p in Path(output_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for ckpt in ckpts:
        if (ckpt / "trainer_state.json").exists():
            print(f"resuming from {ckpt}")
            return str(ckpt)
        print(f"skipping incomplete checkpoint {ckpt} (no trainer_state.json: the run died while saving)")
    return None


def save_final(trainer, processor, output_dir: str, model_args, merge_lora: bool = True) -> None:
    """Save model + processor. A LoRA/QLoRA run keeps its adapter in output_dir/adapter and,
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
    print(f"saved model and processor to {output_dir}")


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
