"""Does a weight change in the trainer reach its colocated vLLM engine? (run by tests/test_vllm.py)

    python -m tests.vllm_sync_probe --config recipes/demo/grpo.yaml --model_name_or_path M \
        --dataset_name D --output_dir O --use_vllm true --vllm_mode colocate --out report.json

Builds the trainer exactly as recipes/grpo.py does (guard, CPU set-up, vision-token ban), then,
twice: gives the trainer new seeded weights, syncs with TRL's own ``sync_weights``, and
generates greedily through the guarded vLLM path and with ``model.generate`` on the same prompt
ids and images. The report holds both generations per round and those of the unchanged model,
so the test can check that vLLM follows each change token by token. A last round turns the
trainer into a model that wants vision special tokens at every step (tests/opinionated.py).
"""

from __future__ import annotations

import json
import sys

import torch
from trl import GRPOConfig, ModelConfig, TrlParser
from trl.data_utils import prepare_multimodal_messages

from data_prep.errors import setup_logging
from recipes.grpo import GRPOScriptArguments, build_trainer
from tests.opinionated import make_vision_loving, reinit
from training.vision_tokens import vision_token_ids

N_PROMPTS, NEW_TOKENS = 4, 12


def hf_greedy(trainer, prompts, suppress=None) -> list[list[int]]:
    """model.generate, one prompt at a time (no padding), vision tokens suppressed like the rollouts."""
    model = trainer.model.eval()
    tok = trainer.processing_class.tokenizer
    out = []
    with torch.no_grad():
        for prompt in prompts:
            inputs = trainer.processing_class.apply_chat_template(
                conversation=[prompt],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
            )
            ids = model.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=NEW_TOKENS,
                suppress_tokens=vision_token_ids(trainer.processing_class) if suppress is None else suppress,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )[0, inputs["input_ids"].shape[1] :]
            out.append(ids.tolist())
    model.train()
    return out


def vllm_greedy(trainer, prompt_ids, images) -> list[list[int]]:
    generation = trainer.vllm_generation
    generation.temperature, generation.max_completion_length = 0.0, NEW_TOKENS
    _, completions, _, _ = generation.generate(prompt_ids, images, 1)
    return [list(c) for c in completions]


def main(argv=None) -> int:
    out_path = None
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--out" in argv:
        i = argv.index("--out")
        out_path = argv[i + 1]
        del argv[i : i + 2]
    parser = TrlParser((GRPOScriptArguments, GRPOConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config(argv)
    setup_logging()  # as recipes.grpo's main does: the guard's start-up probe is logged
    trainer, guard = build_trainer(script_args, training_args, model_args)

    examples = [trainer.train_dataset[i] for i in range(N_PROMPTS)]
    prompts = [prepare_multimodal_messages(e["prompt"], images=e["images"]) for e in examples]
    prompt_ids, images, _ = trainer._tokenize_prompts(prompts)
    prompt_ids = [list(p) for p in prompt_ids]

    report = {"prompt_lengths": [len(p) for p in prompt_ids], "rounds": []}
    report["unchanged_hf"] = hf_greedy(trainer, prompts)
    for seed in (1, 2):
        reinit(trainer.model, seed)
        trainer.vllm_generation.sync_weights()
        report["rounds"].append(
            {
                "seed": seed,
                "vllm": vllm_greedy(trainer, prompt_ids, images),
                "hf": hf_greedy(trainer, prompts),
            }
        )
    # A model that wants vision tokens at every step: the rollouts must still hold none.
    make_vision_loving(trainer.model, vision_token_ids(trainer.processing_class))
    trainer.vllm_generation.sync_weights()
    report["vision_loving"] = {
        "vllm": vllm_greedy(trainer, prompt_ids, images),
        "hf": hf_greedy(trainer, prompts),
        "hf_trl_default_suppress": hf_greedy(
            trainer, prompts, suppress=[trainer.processing_class.image_token_id]
        ),
        "vision_ids": vision_token_ids(trainer.processing_class),
    }
    report["guard_checked"] = guard.checked
    report["guard_collapse"] = guard.collapse
    text = json.dumps(report)
    if out_path:
        with open(out_path, "w") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
