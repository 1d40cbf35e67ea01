"""TRL's server-mode rollouts from two training processes against one real vLLM server on CPU.

    ACCELERATE_USE_CPU=true accelerate launch --config_file recipes/accelerate/ddp.yaml --num_processes 2 \
        -m tests.vllm_server_probe --url http://127.0.0.1:PORT --model M --data D --out report.json

(run so by tests/test_vllm.py). The shape of a multi-GPU server-mode run: N trainer processes, one
server. ``accelerate launch --cpu`` would start one process whatever ``--num_processes`` says (its
simple launcher), so the launch is torchrun's, through ddp.yaml, and ``ACCELERATE_USE_CPU`` makes
``Accelerator()`` a gloo group on CPU, as ``use_cpu: true`` does in a recipe.

Each rank builds its own prompts (rank r takes records r, r + world, ...) and runs trl 1.16's own
``VLLMGeneration(mode="server")`` with this repository's guard and vision-token ban. TRL gathers
every rank's prompts and images onto the main process, which alone holds a ``VLLMClient``, asks the
server once, and broadcasts the results; each rank keeps its slice. So the guard's feature check
(``_place_features``) runs on the main process only, over all ranks' prompts, and so does the
encoder-cache reset after a weight sync (the other ranks have no client).

Left out: ``VLLMClient.init_communicator``, which joins the server's NCCL weight-transfer group and
needs a CUDA device, is a no-op here and nowhere else; for the same reason the weight push inside
``sync_weights`` is skipped, so the sync is only the guard's encoder-cache reset. Nothing else is
bypassed for two processes.

Rank 0 writes the report: per rank (merged with ``gather_object``) the prompts sent and the prompt
ids TRL handed back, the probe's verdict, greedy server completions and greedy ``model.generate``
completions of that rank's own prompts, the guard's count and the reset's answer; then the
wrong-frame check. That one ends the run, as it ends a trainer: the main process raises
``ImageTokenMismatch`` before TRL's broadcast, so the other ranks, waiting in it, never get
completions; on gloo their broadcast fails as the main process exits ("Connection closed by
peer"), and the launcher stops them (SIGTERM) and names rank 0 as the root cause.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch


def parse(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=4, help="prompts over all ranks")
    ap.add_argument("--out", required=True)
    return ap.parse_args(argv)


def hf_greedy(model, prompts, processor) -> list[list[int]]:
    from training.vision_tokens import vision_token_ids

    tok = processor.tokenizer
    out = []
    with torch.no_grad():
        for p in prompts:
            ids = model.generate(
                **p["inputs"],
                do_sample=False,
                max_new_tokens=12,
                suppress_tokens=vision_token_ids(processor),
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
            out.append(ids[0, len(p["ids"]) :].tolist())
    return out


def this_rank(args, accelerator, processor, model) -> tuple[dict, object, object, list]:
    """Every collective step of a trainer's rank on its own prompts; returns its results."""
    from trl.generation.vllm_generation import VLLMGeneration

    from data_prep.io import read_records
    from training import vllm_guard
    from training.vision_tokens import vision_tokens
    from vllm_tools.check import build_prompts

    rank, world = accelerator.process_index, accelerator.num_processes
    records = [r for r in read_records(args.data, split="train") if r.get("image")][: args.n]
    prompts = build_prompts(records[rank::world], args.data, processor, reasoning=True)
    generation = VLLMGeneration(
        model=model,
        accelerator=accelerator,
        processing_class=processor,
        mode="server",
        server_base_url=args.url,
        server_timeout=120,
        temperature=0.0,
        max_completion_length=12,
        generation_kwargs={"bad_words": vision_tokens(processor)},
    )
    guard = vllm_guard.Guard(generation, processor.image_token_id)
    mine = {
        "rank": rank,
        "records": [p["id"] for p in prompts],
        "prompt_ids": [p["ids"] for p in prompts],
        "client": getattr(generation, "vllm_client", None) is not None,
        "probe": guard.probe(prompts[0]["ids"], [prompts[0]["image"]]),
    }
    returned, completions, _, _ = generation.generate(
        [p["ids"] for p in prompts], [[p["image"]] for p in prompts], 1
    )
    mine["returned_prompt_ids"] = [list(r) for r in returned]
    mine["server"] = [list(c) for c in completions]
    mine["hf"] = hf_greedy(model, prompts, processor)
    mine["checked"] = guard.checked

    # A trainer's sync ends with the encoder-cache reset; the push itself is NCCL (skipped on CPU).
    guard._sync_weights = lambda: None
    try:
        guard.sync_weights()
        mine["encoder_cache_reset"] = "ok"
    except RuntimeError as e:
        mine["encoder_cache_reset"] = str(e)
    return mine, generation, guard, prompts


def main(argv=None) -> int:
    args = parse(argv)

    from accelerate import Accelerator
    from accelerate.utils import gather_object
    from transformers import AutoModelForImageTextToText
    from trl.generation.vllm_client import VLLMClient

    from data_prep.io import atomic_write_text
    from training import vllm_guard
    from training.common import load_processor

    VLLMClient.init_communicator = lambda self, device=0: None  # NCCL weight transfer: CUDA only
    accelerator = Accelerator()  # the launch decides: two gloo processes under the test
    processor = load_processor(args.model, args.data, None, None)
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=torch.float32).eval()
    mine, generation, _, prompts = this_rank(args, accelerator, processor, model)
    report = {"world": accelerator.num_processes, "ranks": gather_object([mine])}

    # A prompt built with another frame than the server's must stop at the guard. Every rank sends
    # one; the main process checks them all and raises before TRL's broadcast.
    short = [t for i, t in enumerate(prompts[0]["ids"]) if not (t == processor.image_token_id and i % 2)]
    try:
        generation.generate([short], [[prompts[0]["image"]]], 1)
        report["wrong_frame"] = "not caught"
    except vllm_guard.ImageTokenMismatch as e:
        report["wrong_frame"] = str(e)
        raise
    finally:
        if accelerator.is_main_process:
            atomic_write_text(args.out, json.dumps(report))
    print(f"rank {accelerator.process_index}: wrong frame not caught", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
