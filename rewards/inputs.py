"""What TRL hands a reward function, made uniform: completion texts and per-sample dataset columns.

GRPOTrainer calls every reward as ``f(prompts=..., completions=..., completion_ids=...,
**columns, trainer_state=..., log_extra=..., log_metric=...)`` where ``columns`` are all the
dataset's columns except "prompt", one value per completion (already repeated for the group).
"""

from __future__ import annotations

from rewards.parsing import completion_text

# A column we read, and the dataset columns accepted in its place (first found wins).
ALIASES = {"solution": ("solution", "answer")}


def texts_of(completions) -> list[str]:
    """Completions as plain strings (TRL gives strings, or message lists for conversational data)."""
    return [c if isinstance(c, str) else completion_text(c) for c in completions]


def column(kwargs: dict, name: str, n: int, reward: str, default=None, required: bool = True) -> list:
    """The dataset column ``name`` (or an alias) as a list of ``n`` values.

    Missing and ``required``: ValueError naming the reward and the column. Missing and not
    required: ``[default] * n``. A scalar is broadcast to all ``n`` completions.
    """
    for key in ALIASES.get(name, (name,)):
        if key in kwargs and kwargs[key] is not None:
            values = kwargs[key]
            if isinstance(values, (list, tuple)):
                if len(values) != n:
                    raise ValueError(
                        f"reward '{reward}': column '{key}' has {len(values)} values for {n} completions"
                    )
                return list(values)
            return [values] * n
    if required:
        present = sorted(k for k in kwargs if k not in ("trainer_state", "log_extra", "log_metric"))
        raise ValueError(
            f"reward '{reward}' needs the dataset column '{name}'"
            + (f" (or {', '.join(repr(a) for a in ALIASES[name][1:])})" if name in ALIASES else "")
            + f"; the reward got: {', '.join(present) or 'nothing'}"
        )
    return [default] * n
