"""Rollout throughput: vLLM vs ``model.generate`` on the same GRPO prompts (run by ``make bench``).

    python -m benchmarks.rollouts --model outputs/demo/coldstart --data outputs/phantom --out r.json

Prompts are built as GRPOTrainer builds them (image + reasoning prompt, chat template, image tokens
expanded); vLLM gets them as training/vllm_guard.py sends them (image-token runs collapsed). Both
sample at temperature 1 for exactly ``--tokens`` new tokens per completion (vLLM ``ignore_eos``,
transformers ``min_new_tokens``), at each batch size in ``--batches`` (completions per call; the
demo's GRPO step generates 8). Each figure is the median of ``--repeats`` timed calls after one
warm-up call. vLLM runs in-process, as TRL's colocate mode runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def transformers_rates(args, processor, prompts, gpu: bool) -> dict:
    """Sampled tokens/s of model.generate per batch size (every completion forced to args.tokens)."""
    import torch
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(
        args.model, dtype=torch.bfloat16 if gpu else torch.float32
    ).to("cuda" if gpu else "cpu")
    model.eval()
    processor.tokenizer.padding_side = "left"
    pad = processor.tokenizer.pad_token_id
    rates = {}
    for n in args.batches:
        batch = [prompts[i % len(prompts)] for i in range(n)]
        texts = [processor.apply_chat_template(p["messages"], add_generation_prompt=True) for p in batch]
        inputs = processor(text=texts, images=[p["image"] for p in batch], padding=True, return_tensors="pt")
        inputs = inputs.to(model.device)

        def hf(inputs=inputs):
            with torch.no_grad():
                model.generate(
                    **inputs, do_sample=True, temperature=1.0, max_new_tokens=args.tokens,
                    min_new_tokens=args.tokens, pad_token_id=pad,
                )  # fmt: skip

        rates[f"transformers_{n}"] = n * args.tokens / timed(hf, args.repeats)
    return rates


def vllm_rates(args, processor, prompts, gpu: bool) -> dict:
    """Sampled tokens/s of vLLM per batch size, prompts sent as training/vllm_guard.py sends them."""
    from vllm import LLM, SamplingParams

    from training.vllm_guard import collapse_runs

    llm = LLM(
        model=args.model,
        dtype="bfloat16" if gpu else "float32",
        gpu_memory_utilization=0.3 if gpu else 0.1,
        max_model_len=1024,
        max_num_batched_tokens=4096,
        seed=0,
    )
    params = SamplingParams(temperature=1.0, max_tokens=args.tokens, ignore_eos=True)
    image_id, rates = processor.image_token_id, {}
    for n in args.batches:
        batch = [prompts[i % len(prompts)] for i in range(n)]
        rows = [
            {"prompt_token_ids": collapse_runs(p["ids"], image_id), "multi_modal_data": {"image": p["image"]}}
            for p in batch
        ]
        seconds = timed(lambda rows=rows: llm.generate(rows, params, use_tqdm=False), args.repeats)
        rates[f"vllm_{n}"] = n * args.tokens / seconds
    return rates


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    import torch

    from data_prep.io import atomic_write_text, read_records
    from training.common import load_processor
    from vllm_tools.check import build_prompts

    gpu = torch.cuda.is_available()
    processor = load_processor(args.model, args.data, None, None)
    records = [r for r in read_records(args.data, split="train") if r["task"] == "vqa"][: max(args.batches)]
    prompts = build_prompts(records, args.data, processor, reasoning=True)
    results = {"model": args.model, "device": "cuda" if gpu else "cpu", "tokens_per_completion": args.tokens}
    results |= transformers_rates(args, processor, prompts, gpu)  # its model is freed before vLLM starts
    results |= vllm_rates(args, processor, prompts, gpu)
    for n in args.batches:
        results[f"vllm_over_transformers_{n}"] = results[f"vllm_{n}"] / results[f"transformers_{n}"]
    atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
