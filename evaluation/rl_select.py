"""Difficulty pre-selection for GRPO: keep the prompts whose sampled groups get different rewards.

    python -m evaluation.rl_select --recipe recipes/demo/grpo.yaml --model_name_or_path outputs/demo/coldstart \\
        --out outputs/demo/rl-select [--k 8] [--min_pass_rate 0.0 --max_pass_rate 1.0] [--backend vllm]

GRPO learns only from groups whose completions score differently: the advantage of a completion is
its total reward minus its group's mean, so a group whose k totals are all equal (every answer right,
or every answer wrong, and the other terms equal too) costs a rollout and teaches nothing. DAPO drops
such groups during training (dynamic sampling); CheXOne selects the prompts once, before training,
with the starting checkpoint. This is the offline version: for every prompt GRPO would train on, k
completions are sampled and scored with the recipe's own reward, and the prompts worth RL are kept.

The prompts are exactly recipes/grpo.py's: the same checked records (``load_checked_records``, frame
check included), the same long-prompt filter, the same ``grpo_dataset`` rows and reward columns, the
same reward functions and weights (``resolve_rewards``), called as TRL's GRPOTrainer calls them.

The rule, per prompt (k completions, each with a total reward = the weighted sum of the reward
terms, a term returning None left out, as TRL's nansum does):

- ``pass_rate`` = share of the k completions whose answer term (``answer`` or ``paper_answer``,
  whichever the recipe uses) is >= ``pass_threshold``; ``spread`` = population std of the k totals.
- ``too_hard`` if pass_rate < ``min_pass_rate``; ``too_easy`` if pass_rate > ``max_pass_rate``
  (the window [min_pass_rate, max_pass_rate] is inclusive);
- otherwise ``kept`` if spread > 1e-6 (the totals differ: GRPO gets an advantage), else ``flat``.

With the defaults (0.0, 1.0) no prompt is outside the window, so a prompt is kept iff its totals
differ. That covers every group with 0 < pass_rate < 1 whose totals differ, and also a group that
always fails (or always passes) the answer but differs in format or boxes, which GRPO still learns
from. A group with 0 < pass_rate < 1 and equal totals (a partial answer plus the format term can
tie a right answer without it) has no advantage either, and is ``flat``. The window lets a user also
drop prompts that are mostly solved or mostly failed (with k = 8, ``--min_pass_rate 0.125`` drops the
never-solved ones). A recipe without an answer term has no pass rate: the window does not apply.
``pass_threshold`` (default 1.0) is on the answer term's own scale: full credit for ``answer``,
F1 >= 2/3 for ``paper_answer`` (whose full credit is 1.5; give 1.5 to count only exact answers).

Outputs in --out: ``scores.jsonl``, one line per scored prompt, appended and flushed as it goes
({"id", "task", "rewards": the k totals, "answer": the k answer terms, "pass_rate", "spread",
"terms": every term's k values}); ``settings.json``, what made the scores; ``selection.json``, the
kept ids with the dataset, split, checkpoint, k, window and reward set they were made with (what
``apply_selection`` checks before GRPO trains on them); ``ledger.json``, the counts by category and
task. A rerun continues from scores.jsonl (a torn last line is dropped and that prompt scored again)
and refuses other settings; a rerun with only another window or --limit samples nothing new for the
prompts already scored and decides again. The scores do not depend on the window.

Sampling is seeded per prompt and completion from (seed, id, j): on the transformers backend each
completion draws its tokens from its own generator (Gumbel-max over the processed logits, which is
exactly a sample of the tempered, top-k/top-p softmax), and a resumed run regenerates a partly
scored batch whole, so its scores are the uninterrupted run's. vLLM gets one seed per prompt
(``SamplingParams(n=k, seed=...)``); its draws are its own.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import math
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from data_prep.errors import OpenMedixError, setup_logging, user_errors
from data_prep.io import RECORDS, append_jsonl, atomic_write_text, read_resume_log

log = logging.getLogger(__name__)

SCORES, SETTINGS, SELECTION, LEDGER = "scores.jsonl", "settings.json", "selection.json", "ledger.json"
ANSWER_TERMS = ("answer", "paper_answer")
CATEGORIES = ("kept", "too_easy", "too_hard", "flat")
SPREAD_EPS = 1e-6  # totals closer than this are equal (float sums of the same terms in another order)
BACKENDS = ("transformers", "vllm")
DEFAULT_BATCH = {"transformers": 8, "vllm": 128}  # prompts per generate call


class SelectionError(OpenMedixError, ValueError):
    """Settings that cannot make or apply a selection: the message says which and what to do."""


class SelectionNotFound(OpenMedixError, FileNotFoundError):
    """The selection file a recipe names does not exist."""


# ----------------------------------------------------------------------------- the rule


@dataclass(frozen=True)
class Window:
    """The pass rates a kept prompt may have, both ends included."""

    min_pass_rate: float = 0.0
    max_pass_rate: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.min_pass_rate <= self.max_pass_rate <= 1.0:
            raise SelectionError(
                f"the pass-rate window needs 0 <= min_pass_rate <= max_pass_rate <= 1, got "
                f"[{self.min_pass_rate}, {self.max_pass_rate}]"
            )


def total_reward(values: list, weights: list[float]) -> float | None:
    """The weighted sum of one completion's terms, None terms left out (TRL's nansum); None if all are."""
    present = [(v, w) for v, w in zip(values, weights) if v is not None]
    return sum(v * w for v, w in present) if present else None


def group_scores(
    terms: dict[str, list], weights: list[float], answer_term: str | None, threshold: float
) -> dict:
    """One prompt's group: the k totals, the answer terms, the pass rate and the spread of the totals.

    A completion every term left out (None total; TRL gives it no advantage) does not count in the
    spread; its answer term, if None, counts as not passed."""
    columns = list(terms.values())
    k = len(columns[0])
    totals = [total_reward([c[j] for c in columns], weights) for j in range(k)]
    scored = [t for t in totals if t is not None]
    answers = list(terms[answer_term]) if answer_term else [None] * k
    passed = sum(a is not None and a >= threshold for a in answers)
    return {
        "rewards": totals,
        "answer": answers,
        "pass_rate": passed / k if answer_term else None,
        "spread": statistics.pstdev(scored) if len(scored) > 1 else 0.0,
    }


def decide(pass_rate: float | None, spread: float, window: Window) -> str:
    """``too_hard`` / ``too_easy`` outside the window, else ``kept`` when the totals differ, else ``flat``."""
    if pass_rate is not None:
        if pass_rate < window.min_pass_rate:
            return "too_hard"
        if pass_rate > window.max_pass_rate:
            return "too_easy"
    return "kept" if spread > SPREAD_EPS else "flat"


def build_ledger(rows: list[dict], window: Window) -> tuple[dict, list[str]]:
    """(counts by category, total and per task; the kept ids in row order)."""
    total, by_task, kept = Counter(), {}, []
    for row in rows:
        category = decide(row["pass_rate"], row["spread"], window)
        total[category] += 1
        by_task.setdefault(row["task"], Counter())[category] += 1
        if category == "kept":
            kept.append(row["id"])

    def counts(c: Counter) -> dict:
        return {"scored": sum(c.values()), **{name: c[name] for name in CATEGORIES}}

    return {"total": counts(total), "by_task": {t: counts(c) for t, c in sorted(by_task.items())}}, kept


# ----------------------------------------------------------------------------- rewards, as TRL calls them


def _value(v) -> float | None:
    """A reward's value as JSON keeps it: None (and NaN, TRL's stand-in for None) -> None."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return float(v)


def score_completions(row: dict, texts: list[str], completion_ids: list | None, reward_funcs: list) -> dict:
    """Every reward term of k completions of one dataset row: {name: [k values or None]}.

    Called as GRPOTrainer._calculate_rewards calls a reward: conversational completions, the prompt
    and every other dataset column repeated once per completion, as keyword lists."""
    k = len(texts)
    kwargs = {key: [value] * k for key, value in row.items() if key != "prompt"}
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    terms = {}
    for func in reward_funcs:
        values = func(
            prompts=[row["prompt"]] * k, completions=completions, completion_ids=completion_ids, **kwargs
        )
        if len(values) != k:
            raise SelectionError(
                f"reward '{func.__name__}' returned {len(values)} values for {k} completions"
            )
        terms[func.__name__] = [_value(v) for v in values]
    return terms


# ----------------------------------------------------------------------------- options


@dataclass
class SelectOptions:
    """What rl_select runs with: the recipe's values, then the flags over them."""

    recipe: str
    out: str
    model_name_or_path: str
    dataset_name: str
    dataset_train_split: str = "train"
    tasks: list[str] | None = None
    max_train_samples: int | None = None
    skip_bad_rows: bool = False
    model_family: str | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    max_prompt_tokens: int = 2048
    reward_mode: str = "grounded"
    reward_funcs: list[str] | None = None
    reward_weights: list[float] | None = None
    k: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float | None = None
    repetition_penalty: float = 1.0
    max_new_tokens: int = 512
    window: Window = field(default_factory=Window)
    pass_threshold: float = 1.0
    backend: str = "transformers"
    batch_size: int | None = None
    seed: int = 0
    limit: int | None = None
    progress: bool = True

    def __post_init__(self):
        if self.k < 2:
            raise SelectionError(f"--k {self.k}: a group needs at least 2 completions to have a spread")
        if self.temperature <= 0:
            raise SelectionError(f"temperature {self.temperature}: sampling needs a temperature above 0")
        if self.backend not in BACKENDS:
            raise SelectionError(f"unknown backend '{self.backend}' (expected one of {', '.join(BACKENDS)})")
        self.batch_size = self.batch_size or DEFAULT_BATCH[self.backend]


# recipe keys read as they are, and the one GRPOConfig names otherwise
RECIPE_KEYS = (
    "model_name_or_path", "dataset_name", "dataset_train_split", "tasks", "max_train_samples", "skip_bad_rows",
    "model_family", "min_pixels", "max_pixels", "max_prompt_tokens", "reward_mode", "reward_funcs",
    "reward_weights", "temperature", "top_p", "top_k", "min_p", "repetition_penalty",
)  # fmt: skip
RENAMED = {"max_completion_length": "max_new_tokens"}
FLAGS = ("model_name_or_path", "dataset_name", "k", "temperature", "max_new_tokens", "pass_threshold",
         "backend", "batch_size", "seed", "limit")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", required=True, help="the GRPO recipe YAML whose prompts and reward to use")
    ap.add_argument("--out", required=True, help="output folder (a rerun continues it)")
    ap.add_argument("--model_name_or_path", help="checkpoint to sample with (default: the recipe's)")
    ap.add_argument("--dataset_name", help="dataset folder (default: the recipe's)")
    ap.add_argument("--k", type=int, help="completions per prompt (default 8)")
    ap.add_argument("--temperature", type=float, help="default: the recipe's, else 1.0")
    ap.add_argument("--max_new_tokens", type=int, help="default: the recipe's max_completion_length")
    ap.add_argument("--min_pass_rate", type=float, default=0.0, help="lower pass rates are too_hard")
    ap.add_argument("--max_pass_rate", type=float, default=1.0, help="higher pass rates are too_easy")
    ap.add_argument("--pass_threshold", type=float, help="answer term that counts as a pass (default 1.0)")
    ap.add_argument("--backend", choices=BACKENDS, help="default transformers")
    ap.add_argument("--batch_size", type=int, help="prompts per generate call (default 8; vllm 128)")
    ap.add_argument("--seed", type=int, help="sampling seed (default 0)")
    ap.add_argument("--limit", type=int, help="score only the first N prompts (a later run can add more)")
    ap.add_argument("--no_progress", dest="progress", action="store_false", help="no progress bars")
    return ap


def options_from_args(args: argparse.Namespace) -> SelectOptions:
    """The recipe's keys (unknown ones ignored), then the flags given over them."""
    from training.cli import read_config

    recipe = read_config(Path(args.recipe))
    keys = {**{k: k for k in RECIPE_KEYS}, **RENAMED}
    values = {opt: recipe[key] for key, opt in keys.items() if recipe.get(key) is not None}
    values.update({name: getattr(args, name) for name in FLAGS if getattr(args, name) is not None})
    if recipe.get("multi_objective_aggregation", "sum_then_normalize") != "sum_then_normalize":
        raise SelectionError(
            f"{args.recipe}: multi_objective_aggregation: {recipe['multi_objective_aggregation']} normalises each "
            "term within its group, so a group with equal totals can still have advantages; rl_select's rule "
            "(the spread of the totals) fits sum_then_normalize only"
        )
    for key in ("model_name_or_path", "dataset_name"):
        if not values.get(key):
            raise SelectionError(f"{args.recipe} has no {key}: give --{key}")
    return SelectOptions(
        recipe=args.recipe,
        out=args.out,
        window=Window(args.min_pass_rate, args.max_pass_rate),
        progress=args.progress,
        **values,
    )


# ----------------------------------------------------------------------------- GRPO's prompts and reward


@dataclass
class Prompts:
    """What GRPO would train on: the records, in order, and what turns them into dataset rows."""

    processor: object
    family: object
    records: list[dict]
    boxes_of_image: dict
    reward_funcs: list
    reward_names: list[str]
    reward_weights: list[float]

    @property
    def answer_term(self) -> str | None:
        return next((n for n in ANSWER_TERMS if n in self.reward_names), None)


def resolve_reward_set(opts: SelectOptions) -> tuple[list, list[str], list[float]]:
    """(functions, names, weights) as recipes/grpo.py resolves them (training.grpo_checks.resolve_rewards)."""
    from types import SimpleNamespace

    from training.cli import RecipeError
    from training.grpo_checks import resolve_rewards

    script_args = SimpleNamespace(reward_mode=opts.reward_mode, reward_funcs=opts.reward_funcs)
    training_args = SimpleNamespace(reward_weights=opts.reward_weights)
    try:
        funcs = resolve_rewards(script_args, training_args)
    except RecipeError:
        raise
    except ValueError as e:  # an unknown reward name
        raise RecipeError(f"{opts.recipe}: {e}") from None
    names = [f.__name__ for f in funcs]
    weights = [float(w) for w in (training_args.reward_weights or [1.0] * len(funcs))]
    return funcs, names, weights


def grpo_prompts(opts: SelectOptions) -> Prompts:
    """recipes/grpo.py build_trainer's processor, records and rewards, without the trainer."""
    from data_prep.families import check_family
    from data_prep.frame import processor_rule
    from data_prep.trl_dataset import image_boxes, load_checked_records
    from training.common import load_processor
    from training.grpo_checks import check_reward_family
    from training.lengths import filter_long_prompts

    data, split = opts.dataset_name, opts.dataset_train_split
    family = check_family(opts.model_name_or_path, data, opts.model_family)
    processor = load_processor(
        opts.model_name_or_path, data, opts.min_pixels, opts.max_pixels, require_frame=True
    )
    records = load_checked_records(
        data,
        split,
        tasks=opts.tasks,
        max_samples=opts.max_train_samples,
        skip_bad_rows=opts.skip_bad_rows,
        frame=processor_rule(processor.image_processor),
        progress=opts.progress,
    )
    records = filter_long_prompts(records, processor, opts.max_prompt_tokens, data)
    all_records = load_checked_records(data, split, skip_bad_rows=True, quiet=True)
    funcs, names, weights = resolve_reward_set(opts)
    check_reward_family(funcs, family)
    return Prompts(processor, family, records, image_boxes(all_records), funcs, names, weights)


# ----------------------------------------------------------------------------- sampling


def sample_seed(seed: int, record_id: str, j: int | None = None) -> int:
    """A 63-bit seed from (seed, id[, completion]): the same prompt draws the same, whatever the batch."""
    key = f"{seed}\0{record_id}" + ("" if j is None else f"\0{j}")
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1


def row_prompt_text(processor, row: dict) -> str:
    """The dataset row's prompt through the chat template, as GRPOTrainer renders it (images in place)."""
    from trl.data_utils import prepare_multimodal_messages

    messages = prepare_multimodal_messages(row["prompt"], images=row["images"])
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _seeded_sampler(seeds: list[int], warpers: list):
    """A logits processor that makes ``generate`` draw each row from its own generator.

    The warpers (temperature, top-k, top-p, min-p, as GRPO samples) shape the logits; adding Gumbel
    noise and taking the argmax is a sample of their softmax (the Gumbel-max trick). The result is
    one-hot (0 for the drawn token, -inf elsewhere), so generate's own multinomial draw, from the
    shared global generator, can only pick that token."""
    import torch
    from transformers import LogitsProcessor

    class SeededSampler(LogitsProcessor):
        def __init__(self):
            self.generators = None

        def __call__(self, input_ids, scores):
            if scores.shape[0] != len(seeds):
                raise RuntimeError(f"{scores.shape[0]} rows to sample, {len(seeds)} seeds")
            for warp in warpers:
                scores = warp(input_ids, scores)
            if self.generators is None:
                self.generators = [torch.Generator(device=scores.device).manual_seed(s) for s in seeds]
            u = torch.stack(
                [torch.rand(scores.shape[1], generator=g, device=scores.device) for g in self.generators]
            )
            gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)))
            drawn = (scores.float() + gumbel).argmax(dim=-1, keepdim=True)
            return torch.full_like(scores, float("-inf")).scatter_(1, drawn, 0.0)

    return SeededSampler()


def _warpers(opts: SelectOptions) -> list:
    from transformers.generation.logits_process import (
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    warpers = [TemperatureLogitsWarper(opts.temperature)] if opts.temperature != 1.0 else []
    if opts.top_k:
        warpers.append(TopKLogitsWarper(opts.top_k))
    if opts.top_p < 1.0:
        warpers.append(TopPLogitsWarper(opts.top_p))
    if opts.min_p is not None:
        warpers.append(MinPLogitsWarper(opts.min_p))
    return warpers


def make_sampler(opts: SelectOptions, processor, max_images: int):
    """``sampler(rows, ids) -> [[(text, token ids)] * k per prompt]`` on the chosen backend. The model (its
    device, dtype and threads, pad and banned vision tokens) and the vLLM engine are evaluation/generation.py's."""
    from evaluation.generation import TransformersGenerator, VLLMGenerator

    if opts.backend == "vllm":
        gen = VLLMGenerator(
            opts.model_name_or_path, opts.dataset_name, opts.max_new_tokens, max_images=max_images
        )
        sample = _sample_vllm
    else:
        gen = TransformersGenerator(opts.model_name_or_path, opts.dataset_name, opts.max_new_tokens)
        sample = _sample_transformers
    gen.processor = processor  # the recipe's (its min/max pixels), as GRPO's
    return functools.partial(sample, gen, opts)


def _rgb_images(rows: list[dict]) -> list:
    return [im.convert("RGB") for row in rows for im in row["images"]]  # in prompt order


def _sample_transformers(gen, opts: SelectOptions, rows: list[dict], ids: list[str]) -> list[list]:
    """k completions of each row with ``model.generate`` (num_return_sequences=k: rows come prompt-major)."""
    import torch
    from transformers import LogitsProcessorList

    texts = [row_prompt_text(gen.processor, row) for row in rows]
    inputs = gen.processor(text=texts, images=_rgb_images(rows), padding=True, return_tensors="pt").to(
        gen.device
    )
    seeds = [sample_seed(opts.seed, rid, j) for rid in ids for j in range(opts.k)]
    eos = _eos_ids(gen)
    with torch.inference_mode():
        out = gen.model.generate(
            **inputs,
            max_new_tokens=opts.max_new_tokens,
            do_sample=True,  # with neutral warpers: the seeded sampler's one-hot logits decide
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            min_p=None,
            repetition_penalty=opts.repetition_penalty,
            num_return_sequences=opts.k,
            pad_token_id=gen.pad_token_id,
            eos_token_id=eos,
            suppress_tokens=gen.suppress,
            logits_processor=LogitsProcessorList([_seeded_sampler(seeds, _warpers(opts))]),
        )
    token_ids = [_until_eos(seq.tolist(), eos) for seq in out[:, inputs["input_ids"].shape[1] :].cpu()]
    decoded = gen.processor.batch_decode(token_ids, skip_special_tokens=True)
    pairs = list(zip(decoded, token_ids))
    return [pairs[i * opts.k : (i + 1) * opts.k] for i in range(len(rows))]


def _eos_ids(gen) -> list[int]:
    """Every eos id the model declares, and the tokenizer's (GRPOTrainer's eos_token_ids)."""
    declared = gen.model.generation_config.eos_token_id
    ids = [] if declared is None else [declared] if isinstance(declared, int) else list(declared)
    tok_eos = gen.processor.tokenizer.eos_token_id
    return ids if tok_eos in ids else [tok_eos, *ids]


def _until_eos(ids: list[int], eos: list[int]) -> list[int]:
    """The completion up to its first eos, included (TRL's completion mask); the padding after it dropped."""
    for i, t in enumerate(ids):
        if t in eos:
            return ids[: i + 1]
    return ids


def _sample_vllm(gen, opts: SelectOptions, rows: list[dict], ids: list[str]) -> list[list]:
    """k completions of each row from vLLM: one request per prompt, n=k, seeded per prompt."""
    from vllm import SamplingParams

    from training.vision_tokens import vision_tokens

    bad_words = vision_tokens(gen.processor) or None
    params = [
        SamplingParams(
            n=opts.k,
            temperature=opts.temperature,
            top_p=opts.top_p,
            top_k=opts.top_k,
            min_p=opts.min_p or 0.0,
            repetition_penalty=opts.repetition_penalty,
            max_tokens=opts.max_new_tokens,
            bad_words=bad_words,
            seed=sample_seed(opts.seed, rid),
        )
        for rid in ids
    ]
    prompts = [
        {
            "prompt": row_prompt_text(gen.processor, row),
            "multi_modal_data": {"image": images[0] if len(images) == 1 else images},
        }
        for row, images in zip(rows, [_rgb_images([row]) for row in rows])
    ]
    outputs = gen.llm.generate(prompts, params, use_tqdm=False)
    groups = []
    for o in outputs:
        token_ids = [list(c.token_ids) for c in o.outputs]
        groups.append(list(zip(gen.processor.batch_decode(token_ids, skip_special_tokens=True), token_ids)))
    return groups


# ----------------------------------------------------------------------------- the resume log


def load_scores(path: Path) -> dict[str, dict]:
    """{id: row} of scores.jsonl; a torn line (a kill mid-write) is dropped from the file and its prompt
    scored again. The first row of an id wins (nothing is scored twice)."""
    rows: dict[str, dict] = {}
    for row in read_resume_log(path, _is_score_row, repair=True):
        rows.setdefault(row["id"], row)
    return rows


def _is_score_row(row: dict) -> bool:
    return isinstance(row.get("id"), str) and "rewards" in row and "spread" in row


def records_digest(dataset_dir: str | Path) -> str:
    """sha256 of the dataset's records.jsonl: a selection belongs to these records, not to a path."""
    h = hashlib.sha256()
    with open(Path(dataset_dir) / RECORDS, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _model_id(path: str) -> str:
    return str(Path(path).resolve()) if Path(path).exists() else path


def run_settings(opts: SelectOptions, prompts: Prompts) -> dict:
    """Everything the scores depend on (not the window, --limit or batch size: they change no score)."""
    return {
        "checkpoint": _model_id(opts.model_name_or_path),
        "dataset": str(Path(opts.dataset_name).resolve()),
        "records_sha256": records_digest(opts.dataset_name),
        "split": opts.dataset_train_split,
        "tasks": opts.tasks,
        "max_train_samples": opts.max_train_samples,
        "skip_bad_rows": opts.skip_bad_rows,
        "max_prompt_tokens": opts.max_prompt_tokens,
        "reward_funcs": prompts.reward_names,
        "reward_weights": prompts.reward_weights,
        "answer_term": prompts.answer_term,
        "pass_threshold": opts.pass_threshold,
        "k": opts.k,
        "temperature": opts.temperature,
        "top_p": opts.top_p,
        "top_k": opts.top_k,
        "min_p": opts.min_p,
        "repetition_penalty": opts.repetition_penalty,
        "max_new_tokens": opts.max_new_tokens,
        "backend": opts.backend,
        "seed": opts.seed,
    }


def check_settings(out: Path, settings: dict) -> None:
    """Refuse to add scores made with other settings to OUT's; record the settings otherwise."""
    path, scores = out / SETTINGS, out / SCORES
    if scores.exists() and scores.stat().st_size:
        if not path.exists():
            raise SelectionError(
                f"{scores} exists without {SETTINGS}: what made it is unknown. Use another --out, or delete it."
            )
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v]
        if diff:
            raise SelectionError(
                f"{out} holds scores made with other settings ({'; '.join(diff)}). Use another --out, "
                f"or delete {scores} to start again."
            )
    atomic_write_text(path, json.dumps(settings, indent=2) + "\n")


# ----------------------------------------------------------------------------- the run


def score_missing(opts: SelectOptions, prompts: Prompts, targets: list[dict], done: dict, path: Path) -> int:
    """Sample and score the targets not in ``done`` (updated), appending each batch; returns how many.

    Batches are fixed slices of the targets: a batch partly scored before a kill is generated whole
    again, so every prompt is generated in the same batch as in an uninterrupted run."""
    from data_prep.schema import record_images
    from data_prep.trl_dataset import grpo_dataset

    batches = [targets[i : i + opts.batch_size] for i in range(0, len(targets), opts.batch_size)]
    batches = [b for b in batches if any(r["id"] not in done for r in b)]
    missing = sum(r["id"] not in done for b in batches for r in b)
    if not missing:
        return 0
    if done:
        log.info("resuming: %d prompts already scored in %s, %d to score", len(done), path, missing)
    todo = [r for b in batches for r in b]
    ds = grpo_dataset(todo, opts.dataset_name, prompts.boxes_of_image, prompts.family)  # GRPO's rows
    sampler = make_sampler(opts, prompts.processor, max(len(record_images(r)) for r in todo))
    start = 0
    with tqdm(
        total=missing, desc=f"rl-select ({opts.backend})", unit="prompt", disable=not opts.progress
    ) as bar:
        for batch in batches:
            rows = [ds[start + i] for i in range(len(batch))]  # images decoded here, a batch at a time
            start += len(batch)
            groups = sampler(rows, [r["id"] for r in batch])
            new = []
            for rec, row, group in zip(batch, rows, groups):
                if rec["id"] in done:
                    continue
                texts, ids = [t for t, _ in group], [i for _, i in group]
                terms = score_completions(row, texts, ids, prompts.reward_funcs)
                scores = group_scores(terms, prompts.reward_weights, prompts.answer_term, opts.pass_threshold)
                new.append({"id": rec["id"], "task": rec["task"], **scores, "terms": terms})
            append_jsonl(path, new)
            done.update((r["id"], r) for r in new)
            bar.update(len(new))
    return missing


def select(opts: SelectOptions) -> dict:
    """Score what is missing, decide every scored prompt, write selection.json and ledger.json; returns
    {"ledger", "selection", "scored_now"}."""
    out = Path(opts.out)
    prompts = grpo_prompts(opts)
    settings = run_settings(opts, prompts)
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, settings)
    if prompts.answer_term is None:
        log.warning("rewards %s have no answer term (%s): no pass rate, the window does not apply",
                    prompts.reward_names, " or ".join(ANSWER_TERMS))  # fmt: skip
    path = out / SCORES
    done = load_scores(path)
    targets = prompts.records[: opts.limit] if opts.limit is not None else prompts.records
    scored_now = score_missing(opts, prompts, targets, done, path)
    rows = [done[r["id"]] for r in prompts.records if r["id"] in done]  # GRPO's order
    ledger, kept = build_ledger(rows, opts.window)
    ledger.update(prompts=len(prompts.records), unscored=len(prompts.records) - len(rows))
    ledger.update(window=asdict(opts.window), pass_threshold=opts.pass_threshold)
    if ledger["unscored"]:
        log.warning("%d of %d GRPO prompts are not scored yet (--limit): a selection leaves them out",
                    ledger["unscored"], len(prompts.records))  # fmt: skip
    selection = {**settings, "window": asdict(opts.window), **{k: ledger[k] for k in ("prompts", "unscored")}}
    selection.update(scored=len(rows), kept=len(kept), ids=kept)
    atomic_write_text(out / LEDGER, json.dumps(ledger, indent=2) + "\n")
    atomic_write_text(out / SELECTION, json.dumps(selection, indent=2) + "\n")
    return {"ledger": ledger, "selection": selection, "scored_now": scored_now}


def summary_lines(ledger: dict) -> list[str]:
    """The ledger as a table: one row per task, then the total."""
    head = f"{'task':<22}" + "".join(f"{c:>10}" for c in ("scored", *CATEGORIES))
    lines = [head]
    for task, c in [*ledger["by_task"].items(), ("total", ledger["total"])]:
        lines.append(f"{task:<22}" + "".join(f"{c[name]:>10}" for name in ("scored", *CATEGORIES)))
    return lines


# ----------------------------------------------------------------------------- applying a selection


def apply_selection(
    records: list[dict], selection_path: str | Path, dataset_name: str, split: str
) -> list[dict]:
    """The records the selection keeps, in their order. Refuses a selection made on other records (another
    dataset, or this one rebuilt) or another split, and one naming ids not among ``records``."""
    path = Path(selection_path)
    if not path.is_file():
        raise SelectionNotFound(
            f"rl_selection {path} not found: make it with `python -m evaluation.rl_select`"
        )
    sel = json.loads(path.read_text(encoding="utf-8"))
    if sel.get("split") != split:
        raise SelectionError(
            f"rl_selection {path} was made on split '{sel.get('split')}', this run trains on '{split}'"
        )
    if sel.get("records_sha256") != records_digest(dataset_name):
        raise SelectionError(
            f"rl_selection {path} was made on {sel.get('dataset')}/{RECORDS}, and {Path(dataset_name) / RECORDS} "
            "holds other records: make the selection again on this dataset"
        )
    wanted = set(sel.get("ids") or ())
    have = {r["id"] for r in records}
    unknown = sorted(wanted - have)
    if unknown:
        raise SelectionError(
            f"rl_selection {path} names {len(unknown)} id(s) not among the {len(records)} prompts of this run "
            f"(first: {', '.join(unknown[:3])}): its tasks / max_prompt_tokens / max_train_samples (tasks="
            f"{sel.get('tasks')}, max_prompt_tokens={sel.get('max_prompt_tokens')}, max_train_samples="
            f"{sel.get('max_train_samples')}) differ from this recipe's; make the selection with this recipe"
        )
    kept = [r for r in records if r["id"] in wanted]
    if not kept:
        raise SelectionError(f"rl_selection {path} keeps no prompt: GRPO would have nothing to train on")
    window = sel.get("window") or {}
    log.info(
        "rl_selection %s: training on %d of %d prompts (kept from %d scored with k=%s, pass-rate window [%s, %s])",
        path, len(kept), len(records), sel.get("scored", 0), sel.get("k"),
        window.get("min_pass_rate"), window.get("max_pass_rate"),
    )  # fmt: skip
    return kept


# ----------------------------------------------------------------------------- the command


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging()
    with user_errors("evaluation.rl_select", OpenMedixError, FileNotFoundError):
        opts = options_from_args(args)
        result = select(opts)
    print("\n".join(summary_lines(result["ledger"])))
    sel = result["selection"]
    print(f"kept {sel['kept']} of {sel['scored']} scored prompts ({sel['prompts']} GRPO prompts): "
          f"{Path(opts.out) / SELECTION}")  # fmt: skip


if __name__ == "__main__":
    main()
