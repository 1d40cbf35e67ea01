"""Training curves a person can read: a smoothed trend, and what changed from the start to the end.

A GRPO step's reward is the mean over one small batch of prompts, so step to step it is mostly batch
noise. ``smooth`` gives a centred moving average to draw beside the raw points; ``reward_trend``
says, per logged reward term, how the mean of the last tenth of the logged steps differs from the
first tenth, with a 95% percentile-bootstrap interval that resamples the logged steps of each tenth
(each logged step is a fresh batch of prompts, so steps are the independent unit).
"""

from __future__ import annotations

import numpy as np

TERM_PREFIX, TERM_SUFFIX = "rewards/", "/mean"


def smooth(values, window: int | None = None) -> np.ndarray:
    """Centred moving average (window: about a tenth of the points, odd, at least 3); NaNs ignored."""
    y = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    if window is None:
        window = max(3, (len(y) // 10) | 1)
    half = window // 2
    out = np.full(len(y), np.nan)
    for i in range(len(y)):
        part = y[max(0, i - half) : i + half + 1]
        if np.isfinite(part).any():
            out[i] = np.nanmean(part)
    return out


def terms(history: list[dict]) -> list[str]:
    """The logged metrics a trend is given for: the total reward and each reward term's mean."""
    keys = sorted({k for h in history for k in h if k.startswith(TERM_PREFIX) and k.endswith(TERM_SUFFIX)})
    return (["reward"] if any("reward" in h for h in history) else []) + keys


def reward_trend(history: list[dict], n_resamples: int = 2000, seed: int = 0) -> dict[str, dict]:
    """{metric: {first, last, change, ci_low, ci_high, steps}}: mean of the last tenth of the logged
    steps minus the first tenth (at least 2 logged steps each), with its bootstrap interval."""
    out = {}
    rng = np.random.default_rng(seed)
    for key in terms(history):
        y = np.array([h[key] for h in history if h.get(key) is not None], dtype=float)
        k = max(2, len(y) // 10)
        if len(y) < 2 * k:
            continue
        first, last = y[:k], y[-k:]
        draws = rng.integers(0, k, size=(n_resamples, 2, k))
        changes = last[draws[:, 1]].mean(1) - first[draws[:, 0]].mean(1)
        lo, hi = np.percentile(changes, [2.5, 97.5])
        out[key] = {
            "first": float(first.mean()),
            "last": float(last.mean()),
            "change": float(last.mean() - first.mean()),
            "ci_low": float(lo),
            "ci_high": float(hi),
            "steps": int(k),
        }
    return out


def trend_lines(trend: dict[str, dict]) -> list[str]:
    """A plain-text table of reward_trend's result."""
    if not trend:
        return []
    k = next(iter(trend.values()))["steps"]
    lines = [f"reward change, last {k} logged steps minus first {k} (95% CI, steps resampled):"]
    for key, t in trend.items():
        name = key.removeprefix(TERM_PREFIX).removesuffix(TERM_SUFFIX)
        lines.append(
            f"  {name:<12} {t['first']:.3f} -> {t['last']:.3f}  {t['change']:+.3f} "
            f"[{t['ci_low']:+.3f}, {t['ci_high']:+.3f}]"
        )
    return lines
