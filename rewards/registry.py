"""Reward functions by name: what ``reward_funcs: [...]`` in a recipe YAML refers to."""

from __future__ import annotations

from collections.abc import Callable

from rewards import clinical, grounded, paper

REWARD_FUNCS: dict[str, Callable] = {}

# Recommended ``reward_weights`` for each set, in the order of the names.
PAPER_SET = dict(paper.PAPER_WEIGHTS)  # paper_answer 0.9, paper_format 0.1, paper_coordinate 1.0
GROUNDED_SET = dict(grounded.GROUNDED_WEIGHTS)  # answer 1.0, format 0.2, coordinate 0.2, grounding 0.5
REWARD_SETS = {"paper": PAPER_SET, "grounded": GROUNDED_SET}


def register(func: Callable, name: str | None = None) -> Callable:
    """Add a reward function under ``name`` (default: its ``__name__``, which must then equal the name).

    TRL logs ``rewards/<func.__name__>/mean``, so the registry name and ``__name__`` must agree.
    """
    name = name or func.__name__
    if getattr(func, "__name__", None) != name:
        raise ValueError(f"reward registered as '{name}' has __name__ '{getattr(func, '__name__', None)}'")
    if name in REWARD_FUNCS and REWARD_FUNCS[name] is not func:
        raise ValueError(f"a different reward is already registered as '{name}'")
    REWARD_FUNCS[name] = func
    return func


for _f in (
    paper.paper_answer,
    paper.paper_format,
    paper.paper_coordinate,
    grounded.answer,
    grounded.format,
    grounded.coordinate,
    grounded.grounding,
    clinical.report_labels,  # in no set: a recipe opts in by naming it
):
    register(_f)


def reward_names() -> list[str]:
    return sorted(REWARD_FUNCS)


def get_reward_funcs(names) -> list[Callable]:
    """The reward functions for ``names`` (a list, or one name). Unknown name: ValueError listing the known ones."""
    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in REWARD_FUNCS]
    if unknown:
        raise ValueError(
            f"unknown reward function(s): {', '.join(map(repr, unknown))}; known: {', '.join(reward_names())}"
        )
    return [REWARD_FUNCS[n] for n in names]
