"""Completion statistics logged beside the rewards, through TRL's ``log_metric``.

How it works in TRL 1.16: ``GRPOTrainer._calculate_rewards`` passes every reward function a
``log_metric`` keyword (``GRPOTrainer._log_metric(name, value)``), which appends ``value`` to
a per-step list under ``name``. After the rewards are computed the trainer averages each name
over processes (sum and count are gathered, names sorted so every rank agrees; a rank that
did not log a name adds nothing) and appends the result to its metrics, which are averaged
again over the logging interval and logged with ``kl``, ``entropy`` and
``rewards/<name>/mean`` (in evaluation with the ``eval_`` prefix). One call per metric per
batch is what it expects: we log batch means.

The coordinate rewards (``coordinate`` and ``paper_coordinate``) call
``log_completion_stats(texts, kwargs)``; it does nothing when ``log_metric`` is absent (plain
calls, tests, the benchmark). With both in one recipe the same values are logged twice, which
leaves the means unchanged. Logged names:

    boxes/per_completion   mean number of boxes cited in the first think block
    boxes/invalid_rate     invalid boxes / cited boxes (``boxes.box_status`` in the sample's
                           frame; 512 x 512 when the data has no width/height) - only logged
                           when the batch cites at least one box
    boxes/duplicate_rate   valid boxes that duplicate another (IoU > 0.9) / valid boxes -
                           only logged when the batch cites a valid box
    think/length_words     mean words in the think block (0 without one)
    think/missing_rate     share of completions without a complete think block
"""

from __future__ import annotations

from rewards.boxes import INVALID, VALID, box_status, count_distinct
from rewards.inputs import column
from rewards.parsing import parse

DEFAULT_FRAME = 512  # the released model's frame (max_pixels = 512 * 512), used without width/height


def completion_stats(texts: list[str], widths: list, heights: list) -> dict[str, float]:
    """Batch means of the statistics above (rates only when defined)."""
    n = len(texts)
    if not n:
        return {}
    n_boxes = n_invalid = n_valid = n_distinct = missing = think_words = 0
    for text, w, h in zip(texts, widths, heights):
        w, h = w or DEFAULT_FRAME, h or DEFAULT_FRAME
        p = parse(text)
        if p.think is None:
            missing += 1
            continue
        think_words += len(p.think.split())
        n_boxes += len(p.think_boxes)
        valid = []
        for b in p.think_boxes:
            status = box_status(b, w, h)
            if status == INVALID:
                n_invalid += 1
            elif status == VALID:
                valid.append(b)
        n_valid += len(valid)
        n_distinct += count_distinct(valid)
    out = {
        "boxes/per_completion": n_boxes / n,
        "think/length_words": think_words / n,
        "think/missing_rate": missing / n,
    }
    if n_boxes:
        out["boxes/invalid_rate"] = n_invalid / n_boxes
    if n_valid:
        out["boxes/duplicate_rate"] = (n_valid - n_distinct) / n_valid
    return out


def log_completion_stats(texts: list[str], kwargs: dict) -> dict[str, float]:
    """Log ``completion_stats`` through ``kwargs["log_metric"]`` when TRL provides it; returns the stats."""
    log_metric = kwargs.get("log_metric")
    if not callable(log_metric):
        return {}
    n = len(texts)
    widths = column(kwargs, "width", n, "stats", default=DEFAULT_FRAME, required=False)
    heights = column(kwargs, "height", n, "stats", default=DEFAULT_FRAME, required=False)
    stats = completion_stats(texts, widths, heights)
    for name, value in stats.items():
        log_metric(name, float(value))
    return stats
