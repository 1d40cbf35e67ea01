"""TRL's server-mode rollouts against a real vLLM server on CPU (run by tests/test_vllm.py).

    python -m tests.vllm_server_probe --url http://127.0.0.1:PORT --model M --data D --out report.json

The trainer side is trl 1.16's own ``VLLMGeneration(mode="server")`` with this repository's guard
and vision-token ban, fed prompt ids and images exactly as GRPOTrainer builds them. One thing is
left out: ``VLLMClient.init_communicator``, which joins the server's NCCL weight-transfer group and
needs a CUDA device (the boundary this CPU test cannot reach; it is replaced by a no-op here and
nowhere else). The report holds the guard's probe verdict, greedy server completions, greedy
``model.generate`` completions of the same prompts, and the answer of the encoder-cache reset
that follows every weight sync.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from accelerate import Accelerator
    from transformers import AutoModelForImageTextToText
    from trl.generation.vllm_client import VLLMClient
    from trl.generation.vllm_generation import VLLMGeneration

    from data_prep.io import read_records
    from training import vllm_guard
    from training.common import load_processor
    from training.vision_tokens import vision_token_ids, vision_tokens
    from vllm_tools.check import build_prompts

    VLLMClient.init_communicator = lambda self, device=0: None  # NCCL weight transfer: CUDA only
    processor = load_processor(args.model, args.data, None, None)
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=torch.float32).eval()
    records = [r for r in read_records(args.data, split="train") if r.get("image")][: args.n]
    prompts = build_prompts(records, args.data, processor, reasoning=True)

    generation = VLLMGeneration(
        model=model,
        accelerator=Accelerator(cpu=True),
        processing_class=processor,
        mode="server",
        server_base_url=args.url,
        server_timeout=120,
        temperature=0.0,
        max_completion_length=12,
        generation_kwargs={"bad_words": vision_tokens(processor)},
    )
    guard = vllm_guard.Guard(generation, processor.image_token_id)
    report = {"probe": guard.probe(prompts[0]["ids"], [prompts[0]["image"]])}
    _, completions, _, _ = generation.generate(
        [p["ids"] for p in prompts], [[p["image"]] for p in prompts], 1
    )
    report["server"] = [list(c) for c in completions]

    tok = processor.tokenizer
    hf = []
    with torch.no_grad():
        for p in prompts:
            out = model.generate(
                **p["inputs"],
                do_sample=False,
                max_new_tokens=12,
                suppress_tokens=vision_token_ids(processor),
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
            hf.append(out[0, len(p["ids"]) :].tolist())
    report["hf"] = hf
    report["checked"] = guard.checked

    # A trainer's sync ends with the encoder-cache reset; the push itself is NCCL (skipped on CPU).
    guard._sync_weights = lambda: None
    try:
        guard.sync_weights()
        report["encoder_cache_reset"] = "ok"
    except RuntimeError as e:
        report["encoder_cache_reset"] = str(e)

    # A prompt built with another frame than the server's must stop at the guard.
    short = [t for i, t in enumerate(prompts[0]["ids"]) if not (t == processor.image_token_id and i % 2)]
    try:
        generation.generate([short], [[prompts[0]["image"]]], 1)
        report["wrong_frame"] = "not caught"
    except vllm_guard.ImageTokenMismatch as e:
        report["wrong_frame"] = str(e)

    text = json.dumps(report)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
