"""Evaluate a checkpoint on a test set: generate (resumable), score, write results and a gallery.

    python -m evaluation.run --model outputs/grpo --data data/phantom --out outputs/eval/grpo \\
        [--split test] [--limit N] [--batch-size 8] [--backend transformers|vllm] \\
        [--reasoning/--no-reasoning] [--max-new-tokens 256] [--name NAME] \\
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

``--metrics-only`` scores an existing predictions.jsonl without loading a model (e.g. predictions
written by another system in the same format). Function API: ``evaluate(...)`` below.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tqdm import tqdm

from data_prep.families import FAMILIES, check_family, get_family
from data_prep.io import atomic_write_text, read_records, write_jsonl
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
    append_predictions,
    load_predictions,
)


def _check_config(out: Path, config: dict, overwrite: bool) -> None:
    path = out / RUN_CONFIG
    keys = ("model", "data", "split", "reasoning", "max_new_tokens", "backend")
    if path.exists() and not overwrite and (out / PREDICTIONS).exists():
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), config[k]) for k in keys if old.get(k) != config[k]}
        if diff:
            lines = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in ((k, *v) for k, v in diff.items()))
            raise SystemExit(
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


# ----------------------------------------------------------------------------- the API


def evaluate(
    model_path: str | None,
    data_dir: str,
    out_dir: str,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 8,
    reasoning: bool = True,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    backend: str = "transformers",
    name: str | None = None,
    meteor: bool = True,
    model_metrics: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    gallery: int = 24,
    overwrite: bool = False,
    metrics_only: bool = False,
    progress: bool = True,
    threads: int | None = None,
    family_name: str | None = None,
    sample: int | None = None,
    cluster: str = "study",
) -> dict:
    """Generate what is missing from OUT/predictions.jsonl, then score; returns the results dict.

    The model's family (data_prep.families, from its config) sets the box convention its prompts ask
    for and the scoring reads; ``family_name`` names it for --metrics-only runs without a model."""
    from evaluation import nlg
    from evaluation.scoring import score_run

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend '{backend}' (expected one of {', '.join(BACKENDS)})")
    records = read_records(data_dir, split=split)
    if not records:
        raise SystemExit(f"{data_dir}: no records in split '{split}'")
    boxes_of_image = image_boxes(records)  # of the whole split: a limited run may cut a study in two
    if limit is not None:
        records = records[:limit]
    if sample is not None:
        records = S.study_sample(records, sample, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pred_path = out / PREDICTIONS
    if overwrite:
        pred_path.unlink(missing_ok=True)
    if model_path:
        family = check_family(model_path, data_dir)
    else:  # --metrics-only: the family the predictions were made with
        old = json.loads((out / RUN_CONFIG).read_text()) if (out / RUN_CONFIG).exists() else {}
        family = get_family(family_name or old.get("family"))
    config = {
        "name": name or (Path(model_path).name if model_path else out.name),
        "family": family.name,
        "model": _model_id(model_path),
        "data": str(Path(data_dir).resolve()),
        "split": split,
        "reasoning": reasoning,
        "max_new_tokens": max_new_tokens,
        "backend": backend,
        "decoding": "greedy",
        "limit": limit,
        "sample": sample,
    }
    if metrics_only and (out / RUN_CONFIG).exists():
        old = json.loads((out / RUN_CONFIG).read_text())
        config["name"] = name or old.get("name") or config["name"]
        config["model"] = config["model"] or old.get("model")
    if not metrics_only:
        _check_config(out, config, overwrite)

    if meteor and any(r["task"].startswith("report_") for r in records):
        nlg.start_meteor()  # its jar loads for ~20 s: let that overlap with generation

    done = load_predictions(pred_path, repair=not metrics_only)
    todo = [r for r in records if r["id"] not in done]
    resumed = len(records) - len(todo)
    gen_seconds = 0.0
    if todo and metrics_only:
        raise SystemExit(
            f"--metrics-only: {len(todo)} of {len(records)} records have no prediction in {pred_path}"
        )
    if todo:
        if not model_path:
            raise SystemExit("--model is needed to generate predictions")
        from evaluation.generation import make_generator

        if resumed:
            print(f"resuming: {resumed} predictions already in {pred_path}, {len(todo)} to generate")
        t0 = time.perf_counter()
        max_images = max(len(record_images(r)) for r in todo)
        generator = make_generator(
            backend, str(model_path), data_dir, max_new_tokens, threads=threads, max_images=max_images
        )
        load_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        with tqdm(total=len(todo), desc=f"generate ({backend})", unit="sample", disable=not progress) as bar:
            for i in range(0, len(todo), batch_size):
                batch = todo[i : i + batch_size]
                completions = generator.generate(batch, reasoning)
                append_predictions(
                    pred_path, [{"id": r["id"], "completion": c} for r, c in zip(batch, completions)]
                )
                bar.update(len(batch))
        gen_seconds = time.perf_counter() - t0
        del generator
    else:
        load_seconds = 0.0

    t0 = time.perf_counter()
    completions = load_predictions(pred_path)
    results, per_sample, stats = score_run(
        records,
        completions,
        reasoning,
        meteor=meteor,
        model_metrics=model_metrics,
        n_boot=n_boot,
        seed=seed,
        boxes_of_image=boxes_of_image,
        family=family,
        cluster=cluster,
    )
    score_seconds = time.perf_counter() - t0
    results = {
        "run": config,
        "timing": {
            "generated": len(todo),
            "resumed": resumed,
            "model_load_s": round(load_seconds, 2),
            "generation_s": round(gen_seconds, 2),
            "samples_per_s": round(len(todo) / gen_seconds, 3) if gen_seconds else None,
            "scoring_s": round(score_seconds, 2),
            "batch_size": batch_size,
        },
        "bootstrap": {
            "resamples": n_boot,
            "seed": seed,
            "confidence": 0.95,
            "method": "percentile",
            "cluster": cluster,
            "clusters": len(set(S.cluster_codes(records, cluster).tolist())),
        },
        **results,
    }
    atomic_write_text(out / RESULTS, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    write_jsonl(out / PER_SAMPLE, per_sample)
    S.save_statistics(out / METRIC_ROWS, records, stats)
    if gallery:
        from evaluation.gallery import write_gallery

        write_gallery(
            out / GALLERY,
            records,
            {config["name"]: completions},
            data_dir,
            n=gallery,
            seed=seed,
            scores={config["name"]: {row["id"]: row for row in per_sample}},
            families={config["name"]: family},
        )
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
    skipped = [
        f"  {k}: {v['reason']}"
        for k, v in (results.get("report") or {}).items()
        if isinstance(v, dict) and v.get("status") in ("skipped", "error")
    ]
    if skipped:
        lines.append("skipped report metrics:")
        lines.extend(skipped)
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model folder (transformers format); not needed with --metrics-only")
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
    ap.add_argument("--batch-size", type=int, default=8, help="records per generate call (vLLM: use 256+)")
    ap.add_argument("--backend", choices=BACKENDS, default="transformers")
    ap.add_argument(
        "--reasoning",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ask for <think> reasoning with boxes (paper prompt); --no-reasoning: answer only",
    )
    ap.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    ap.add_argument("--name", help="run name in tables (default: the model folder's name)")
    ap.add_argument(
        "--no-meteor", dest="meteor", action="store_false", help="skip METEOR (its jar starts in ~20 s)"
    )
    ap.add_argument(
        "--no-model-metrics",
        dest="model_metrics",
        action="store_false",
        help="skip BERTScore / RadGraph / CheXbert even when installed",
    )
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gallery", type=int, default=24, help="images in gallery.html (0: none)")
    ap.add_argument("--overwrite", action="store_true", help="drop existing predictions and start again")
    ap.add_argument(
        "--metrics-only", action="store_true", help="score OUT/predictions.jsonl, generate nothing"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for generation (default: 1 for models under 50M parameters, else torch's)",
    )
    ap.add_argument(
        "--family",
        choices=list(FAMILIES),
        help="--metrics-only without --model: the box convention of the predictions (default: run_config.json)",
    )
    args = ap.parse_args(argv)
    reasoning = args.reasoning
    if reasoning is None:  # default: on; --metrics-only keeps the prompt mode the predictions were made with
        config = Path(args.out) / RUN_CONFIG
        reasoning = (
            json.loads(config.read_text()).get("reasoning", True)
            if args.metrics_only and config.exists()
            else True
        )
    results = evaluate(
        args.model,
        args.data,
        args.out,
        split=args.split,
        limit=args.limit,
        batch_size=args.batch_size,
        reasoning=reasoning,
        max_new_tokens=args.max_new_tokens,
        backend=args.backend,
        name=args.name,
        meteor=args.meteor,
        model_metrics=args.model_metrics,
        n_boot=args.bootstrap,
        seed=args.seed,
        gallery=args.gallery,
        overwrite=args.overwrite,
        metrics_only=args.metrics_only,
        threads=args.threads,
        family_name=args.family,
        sample=args.sample,
        cluster=args.cluster,
    )
    print("\n".join(summary_lines(results)))
    print(f"results: {Path(args.out) / RESULTS}")


if __name__ == "__main__":
    main()
