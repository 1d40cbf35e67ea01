"""Reward functions for GRPO (TRL signature), a registry by name, and their parsing helpers.

Recipes name their rewards in YAML and the GRPO script turns the names into functions::

    reward_funcs: [answer, format, coordinate, grounding]      # grounded mode (our default)
    reward_weights: [1.0, 0.2, 0.2, 0.5]

    reward_funcs: [paper_answer, paper_format, paper_coordinate]   # paper mode (DeepMedix-R1)
    reward_weights: [0.9, 0.1, 1.0]

    from rewards import get_reward_funcs
    trainer = GRPOTrainer(..., reward_funcs=get_reward_funcs(cfg.reward_funcs))

Every reward is ``f(completions, **kwargs) -> list[float | None]``: completions may be strings
or conversational message lists; everything else comes from dataset columns that TRL passes
as keyword arguments - ``solution`` (the ground-truth answer; ``answer`` is accepted too),
``task``, ``boxes`` (``[{"label", "box"}]``, may be empty), ``width``, ``height`` (the model
frame). A reward's ``__name__`` is its registry name, so TRL logs ``rewards/<name>/mean``.

Paper mode (``rewards.paper``) - the released DeepMedix-R1 reward, exactly, quirks included
    ``paper_answer`` 0..1.5: list F1, short exact match, or (character BLEU-1 + BLEU-4 +
    ROUGE-1) / 3, each x 1.5. ``paper_format`` 0/1: the whole text matches
    ``<think>.*</think>.*\\boxed{.*}.*``. ``paper_coordinate`` <= 0.15: +0.05 per box in the
    think block, -0.2 when a number exceeds 512, no floor. ``paper.score()`` gives the released
    ``compute_xray_score`` dict. Use it to reproduce the paper; it can be gamed (any three
    syntactically valid boxes pay, BLEU counts characters).

Grounded mode (``rewards.grounded``) - what our recipes train with
    ``answer`` [0, 1]: task-aware - normalised exact match (short), label-set F1 (lists,
    classification), word BLEU-4 + ROUGE-L (reports), box IoU (grounding); only a single
    ``\\boxed{}`` after the reasoning counts. ``format`` {0, 1}: one non-empty think block
    first, one boxed answer, nothing else, no truncation or degenerate repetition.
    ``coordinate`` [-1, 1]: distinct boxes valid in the real image frame pay (capped), invalid
    ones cost, spam scores -1. ``grounding`` [0, 1] or None: soft F1 of IoU (Hungarian
    matching) between cited and ground-truth boxes, None where the sample has none.

Clinical (``rewards.clinical``) - in no set; a recipe opts in by naming it
    ``report_labels`` [0, 1] or None: on report tasks, the F1 of the CheXpert observations that the
    boxed report and the reference state as positive (``report_labels.label_agreement``, uncertain
    counted as positive); no single boxed answer -> 0; None on every other task.

Beside the rewards, ``coordinate``/``paper_coordinate`` log box and think statistics through
TRL's ``log_metric`` keyword (``rewards.stats``). ``python -m benchmarks.rewards`` measures
throughput.

Modules: ``parsing`` (think block, boxed answers, boxes, answer normalisation, format checks),
``similarity`` (nltk-exact BLEU, rouge_score-exact ROUGE-1, bit-parallel ROUGE-L), ``boxes`` (frame
validity, IoU, near-duplicates, Hungarian matching, set F1), ``paper``, ``grounded``, ``stats``,
``report_labels`` (rule-based CheXpert labels of report text and their agreement), ``clinical``,
``inputs`` (what TRL passes), ``registry``, ``server`` (`make reward-server`: rewards scored once for
every training process, GRPO's client is ``training.reward_client``) and ``chexbert`` (CheXbert labels,
for the server's ``report_labels_chexbert``). The evaluation (``evaluation.metrics``) uses the same
``boxes`` and ``parsing``; where it reads differently on purpose, both variants sit side by side there.

Adding a reward (a short recipe):

1. Write ``def my_reward(completions, **kwargs) -> list[float | None]`` in the module of its
   mode (or a new one): turn completions into text with ``inputs.texts_of``, read columns with
   ``inputs.column(kwargs, "solution", len(completions), "my_reward")`` (a clear error names
   a missing column), parse with ``parsing.parse``; return one float per completion, or
   None where it does not apply. Keep it fast: no model calls, no I/O.
2. Register it in ``rewards/registry.py`` (``register(my_reward)``); the name is ``__name__``.
3. Test it in ``tests/test_rewards_*.py``: its range, a hand-checked case, the hacks it must
   not pay, conversational input; add it to ``benchmarks/rewards.py`` if it is in a default set.
4. Name it in a recipe's ``reward_funcs`` with a weight in ``reward_weights``.
"""

from rewards.registry import (
    GROUNDED_SET,
    PAPER_SET,
    REWARD_FUNCS,
    REWARD_SETS,
    get_reward_funcs,
    register,
    reward_names,
)

__all__ = [
    "GROUNDED_SET",
    "PAPER_SET",
    "REWARD_FUNCS",
    "REWARD_SETS",
    "get_reward_funcs",
    "register",
    "reward_names",
]
