"""Evaluate a checkpoint on a test set: generate (resumable), score, write results and a gallery.

    python -m evaluation.run --model outputs/grpo --data data/phantom --out outputs/eval/grpo \\
        [--split test] [--limit N] [--batch_size 8] [--backend transformers|vllm] \\
        [--reasoning/--no_reasoning] [--max_new_tokens 256] [--name NAME] \\
        [--sample N] [--cluster study|patient|record]

Writes into OUT:
  predictions.jsonl  one line per record as it is generated: {"id", "completion"}; a rerun (after
                     a crash or a kill) skips the ids already there and generates only the rest
  run_config.json    model, data, split, prompt mode, decoding: a rerun with other settings refuses
                     to mix them into the same predictions (use --overwrite or another --out)
  results.json       metrics per task group, the headline metrics with 95% CIs that resample whole
                     studies (--cluster; evaluation.stats), timing
  metric_rows.npz    every headline metric's per-record rows, so that evaluation.compare can pair two
                     runs scored on the same records
  per_sample.jsonl   the extracted answer and per-sample scores of every record
  gallery.html       sampled images with the model's reasoning, its cited boxes and the gt boxes

``--metrics_only`` scores an existing predictions.jsonl without loading a model (e.g. predictions
written by another system in the same format). Function API: ``evaluate(model, data, out, **options)``
below, its options those of ``EvalOptions`` (one field per command-line flag).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

from tqdm import tqdm

from data_prep.errors import OpenMedixError, setup_logging, user_errors
from data_prep.families import FAMILIES, check_family, get_family
from data_prep.io import append_jsonl, atomic_write_text, read_records, write_jsonl
from data_prep.schema import record_images
from data_prep.trl_dataset import image_boxes
from evaluation import stats as S
from evaluation.generation import BACKENDS
from evaluation.runs import (  # noqa: F401  (re-exported: callers read run.PREDICTIONS etc.)
    DEFAULT_MAX_NEW_TOKENS,
    GALLERY,
    METRIC_ROWS,
    PER_SAMPLE,
    PREDICTIONS,
    RESULTS,
    RUN_CONFIG,
    RunError,
    load_predictions,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EvalOptions:
    """How to evaluate: every field but ``progress`` is a command-line flag whose argparse ``dest`` is
    the field's name, so ``main`` passes the parsed flags over without naming them."""

    split: str = "test"
    limit: int | None = None  # the first N records of the split
    sample: int | None = None  # N records spanning the split's studies (evaluation.stats.study_sample)
    cluster: str = "study"  # what the CIs resample
    batch_size: int = 8
    backend: str = "transformers"
    reasoning: bool = True
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    name: str | None = None
    meteor: bool = True
    model_metrics: bool = True
    n_boot: int = 1000
    seed: int = 0
    gallery: int = 24
    overwrite: bool = False
    metrics_only: bool = False
    threads: int | None = None
    family_name: str | None = None  # the family of --metrics_only predictions without a model
    progress: bool = True


def _check_config(out: Path, config: dict, overwrite: bool) -> None:
    path = out / RUN_CONFIG
    keys = ("model", "data", "split", "reasoning", "max_new_tokens", "backend")
    if path.exists() and not overwrite and (out / PREDICTIONS).exists():
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), config[k]) for k in keys if old.get(k) != config[k]}
        if diff:
            lines = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in ((k, *v) for k, v in diff.items()))
            raise RunError(
                f"{out} holds predictions made with other settings ({lines}). Use another --out, "
                "or --overwrite to start again."
            )
    atomic_write_text(path, json.dumps(config, indent=2) + "\n")


def _model_id(model_path) -> str | None:
    """A local model folder as an absolute path (a resumed run may be started from elsewhere)."""
    if not model_path:
        return None
    p = Path(model_path)
    return str(p.resolve()) if p.exists() else str(model_path)


def _stored_config(out: Path) -> dict:
    return json.loads((out / RUN_CONFIG).read_text()) if (out / RUN_CONFIG).exists() else {}


# ----------------------------------------------------------------------------- the steps


def _select_records(data_dir: str, opts: EvalOptions) -> tuple[list[dict], dict]:
    """(the records to evaluate, the boxes of every image of the whole split)."""
    records = read_records(data_dir, split=opts.split)
    if not records:
        raise RunError(f"{data_dir}: no records in split '{opts.split}'")
    boxes_of_image = image_boxes(records)  # of the whole split: a limited run may cut a study in two
    if opts.limit is not None:
        records = records[: opts.limit]
    if opts.sample is not None:
        records = S.study_sample(records, opts.sample, seed=opts.seed)
    return records, boxes_of_image


def _run_config(model_path, data_dir: str, out: Path, opts: EvalOptions):
    """(run_config.json's content, the model's family). The family (data_prep.families, from the
    model's config) sets the box convention its prompts ask for and the scoring reads."""
    if model_path:
        family = check_family(model_path, data_dir)
    else:  # --metrics_only: the family the predictions were made with
        family = get_family(opts.family_name or _stored_config(out).get("family"))
    config = {
        "name": opts.name or (Path(model_path).name if model_path else out.name),
        "family": family.name,
        "model": _model_id(model_path),
        "data": str(Path(data_dir).resolve()),
        "split": opts.split,
        "reasoning": opts.reasoning,
        "max_new_tokens": opts.max_new_tokens,
        "backend": opts.backend,
        "decoding": "greedy",
        "limit": opts.limit,
        "sample": opts.sample,
    }
    if opts.metrics_only and (out / RUN_CONFIG).exists():
        old = _stored_config(out)
        config["name"] = opts.name or old.get("name") or config["name"]
        config["model"] = config["model"] or old.get("model")
    return config, family


def _generate_missing(
    model_path, data_dir: str, records: list[dict], pred_path: Path, opts: EvalOptions
) -> dict:
    """Generate the records that have no prediction yet, appending each batch; returns the timing."""
    done = load_predictions(pred_path, repair=not opts.metrics_only)
    todo = [r for r in records if r["id"] not in done]
    resumed = len(records) - len(todo)
    load_seconds = gen_seconds = 0.0
    if todo and opts.metrics_only:
        raise RunError(
            f"--metrics_only: {len(todo)} of {len(records)} records have no prediction in {pred_path}"
        )
    if todo:
        if not model_path:
            raise RunError("--model is needed to generate predictions")
        from evaluation.generation import make_generator

        if resumed:
            log.info("resuming: %d predictions already in %s, %d to generate", resumed, pred_path, len(todo))
        t0 = time.perf_counter()
        max_images = max(len(record_images(r)) for r in todo)
        generator = make_generator(
            opts.backend,
            str(model_path),
            data_dir,
            opts.max_new_tokens,
            threads=opts.threads,
            max_images=max_images,
        )
        load_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        desc = f"generate ({opts.backend})"
        with tqdm(total=len(todo), desc=desc, unit="sample", disable=not opts.progress) as bar:
            for i in range(0, len(todo), opts.batch_size):
                batch = todo[i : i + opts.batch_size]
                completions = generator.generate(batch, opts.reasoning)
                append_jsonl(
                    pred_path, [{"id": r["id"], "completion": c} for r, c in zip(batch, completions)]
                )
                bar.update(len(batch))
        gen_seconds = time.perf_counter() - t0
        del generator
    return {
        "generated": len(todo),
        "resumed": resumed,
        "model_load_s": round(load_seconds, 2),
        "generation_s": round(gen_seconds, 2),
        "samples_per_s": round(len(todo) / gen_seconds, 3) if gen_seconds else None,
    }


def _write_outputs(
    out: Path, data_dir: str, records, results, per_sample, stats, completions, family, opts
) -> None:
    """results.json, per_sample.jsonl, metric_rows.npz and (unless --gallery 0) gallery.html."""
    atomic_write_text(out / RESULTS, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    write_jsonl(out / PER_SAMPLE, per_sample)
    S.save_statistics(out / METRIC_ROWS, records, stats)
    if opts.gallery:
        from evaluation.gallery import write_gallery

        name = results["run"]["name"]
        write_gallery(
            out / GALLERY,
            records,
            {name: completions},
            data_dir,
            n=opts.gallery,
            seed=opts.seed,
            scores={name: {row["id"]: row for row in per_sample}},
            families={name: family},
        )


# ----------------------------------------------------------------------------- the API


def evaluate(
    model_path: str | None, data_dir: str, out_dir: str, options: EvalOptions | None = None, **fields
) -> dict:
    """Generate what is missing from OUT/predictions.jsonl, then score; returns the results dict.

    ``options``, or any of its fields as keywords (``evaluate(model, data, out, limit=10)``)."""
    from evaluation import nlg
    from evaluation.scoring import score_run

    opts = dataclasses.replace(options or EvalOptions(), **fields)
    if opts.backend not in BACKENDS:
        raise RunError(f"unknown backend '{opts.backend}' (expected one of {', '.join(BACKENDS)})")
    records, boxes_of_image = _select_records(data_dir, opts)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pred_path = out / PREDICTIONS
    if opts.overwrite:
        pred_path.unlink(missing_ok=True)
    config, family = _run_config(model_path, data_dir, out, opts)
    if not opts.metrics_only:
        _check_config(out, config, opts.overwrite)
    if opts.meteor and any(r["task"].startswith("report_") for r in records):
        nlg.start_meteor()  # its jar loads for ~20 s: let that overlap with generation
    timing = _generate_missing(model_path, data_dir, records, pred_path, opts)

    t0 = time.perf_counter()
    completions = load_predictions(pred_path)
    scored, per_sample, stats = score_run(
        records,
        completions,
        opts.reasoning,
        meteor=opts.meteor,
        model_metrics=opts.model_metrics,
        n_boot=opts.n_boot,
        seed=opts.seed,
        boxes_of_image=boxes_of_image,
        family=family,
        cluster=opts.cluster,
    )
    timing.update(scoring_s=round(time.perf_counter() - t0, 2), batch_size=opts.batch_size)
    results = {
        "run": config,
        "timing": timing,
        "bootstrap": {
            "resamples": opts.n_boot,
            "seed": opts.seed,
            "confidence": 0.95,
            "method": "percentile",
            "cluster": opts.cluster,
            "clusters": len(set(S.cluster_codes(records, opts.cluster).tolist())),
        },
        **scored,
    }
    _write_outputs(out, data_dir, records, results, per_sample, stats, completions, family, opts)
    return results


# ----------------------------------------------------------------------------- CLI


def summary_lines(results: dict) -> list[str]:
    from evaluation.scoring import HEADLINE_LABELS

    lines = [
        f"{results['run']['name']}: {results['n']} records ({', '.join(f'{k} {v}' for k, v in results['tasks'].items())})"
    ]
    for key, h in results["headline"].items():
        if h["value"] is None:
            continue
        ci = f"  [{h['ci_low']:.4f}, {h['ci_high']:.4f}]" if h["ci_low"] is not None else ""
        lines.append(f"  {HEADLINE_LABELS.get(key, key):<34} {h['value']:.4f}{ci}  (n={h['n']})")
    rexrank = (results.get("report") or {}).get("rexrank") or {}
    if rexrank:
        lines.append("ReXrank report metrics:")
    for name, status in rexrank.items():
        keys = [k for k in results["headline"] if k == f"report/{name}" or k.startswith(f"report/{name}_")]
        if status.get("status") == "computed":
            lines.append(
                f"  {name}: " + ", ".join(f"{k} {results['headline'][k]['value']:.4f}" for k in keys)
            )
        else:
            lines.append(f"  {name}: not computed: {status['reason']}, {status['command']}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    """The flags: --model, --data and --out, then one per EvalOptions field (``dest`` = the field)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model folder (transformers format); not needed with --metrics_only")
    ap.add_argument("--data", required=True, help="dataset folder with records.jsonl (our schema)")
    ap.add_argument("--out", required=True, help="output folder of this run")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None, help="first N records of the split")
    ap.add_argument(
        "--sample",
        type=int,
        default=None,
        help="N records that span the split's studies (one per study first, tasks rotating; seeded)",
    )
    ap.add_argument(
        "--cluster",
        choices=S.CLUSTER_UNITS,
        default="study",
        help="what the CIs resample: whole studies (default), whole patients, or single records",
    )
    ap.add_argument("--batch_size", type=int, default=8, help="records per generate call (vLLM: use 256+)")
    ap.add_argument("--backend", choices=BACKENDS, default="transformers")
    # None: on, except that --metrics_only keeps the prompt mode the predictions were made with
    ap.add_argument(
        "--reasoning",
        action="store_const",
        const=True,
        default=None,
        help="ask for <think> reasoning with boxes (paper prompt; the default)",
    )
    ap.add_argument("--no_reasoning", dest="reasoning", action="store_const", const=False, help="answer only")
    ap.add_argument("--max_new_tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    ap.add_argument("--name", help="run name in tables (default: the model folder's name)")
    ap.add_argument(
        "--no_meteor", dest="meteor", action="store_false", help="skip METEOR (its jar starts in ~20 s)"
    )
    ap.add_argument(
        "--no_model_metrics",
        dest="model_metrics",
        action="store_false",
        help="skip BERTScore / RadGraph / CheXbert even when installed",
    )
    ap.add_argument(
        "--bootstrap",
        dest="n_boot",
        metavar="N",
        type=int,
        default=1000,
        help="bootstrap resamples for the CIs (0: none)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gallery", type=int, default=24, help="images in gallery.html (0: none)")
    ap.add_argument("--overwrite", action="store_true", help="drop existing predictions and start again")
    ap.add_argument(
        "--metrics_only", action="store_true", help="score OUT/predictions.jsonl, generate nothing"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for generation (default: 1 for models under 50M parameters, else torch's)",
    )
    ap.add_argument(
        "--family",
        dest="family_name",
        choices=list(FAMILIES),
        help="--metrics_only without --model: the box convention of the predictions (default: run_config.json)",
    )
    return ap


def options_from_args(args: argparse.Namespace) -> EvalOptions:
    """EvalOptions from the parsed flags (all but --model, --data and --out); a flag without a field
    of that name is a TypeError here, not a silently ignored setting."""
    fields = {k: v for k, v in vars(args).items() if k not in ("model", "data", "out")}
    if fields["reasoning"] is None:
        stored = _stored_config(Path(args.out)) if args.metrics_only else {}
        fields["reasoning"] = stored.get("reasoning", True)
    return EvalOptions(**fields)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging()
    with user_errors("evaluation.run", OpenMedixError, FileNotFoundError):
        results = evaluate(args.model, args.data, args.out, options_from_args(args))
    print("\n".join(summary_lines(results)))
    print(f"results: {Path(args.out) / RESULTS}")


if __name__ == "__main__":
    main()
