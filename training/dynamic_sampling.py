"""Dynamic sampling (DAPO): GRPO trains only on groups whose rewards differ.

A group whose completions all get the same reward has zero advantage: it costs a rollout and a
backward pass, and under a token-mean loss it only dilutes the step. TRL 1.16 logs the share of
such groups (``frac_reward_zero_std``) but trains on them. ``DynamicSamplingGRPOTrainer`` drops
them and fills the step with informative rows:

- After TRL scores a generation batch, a group is **flat** when its rewards have no spread: the
  weighted sum (``sum_then_normalize``) or every reward term (``normalize_then_sum``) is the same
  for all its completions, the quantity TRL normalises into advantages.
- While some process has fewer informative rows than its share of the generation batch, a refill
  batch is generated, at most ``max_refills`` times per step (the cap on extra generation). A
  refill is sized to the deficit (divided by the informative share seen so far, in whole groups, at
  most one generation batch): at a 10% flat share a step costs about 10% more generation, not
  double. Refill prompts come from a second shuffled pass over the training set (seed + 1), so a
  refill does not repeat the batch it tops up; the pass is not checkpointed (a resumed run starts
  it again).
- **Over-sampling, not carrying over:** each process keeps its first informative rows, in order, and
  drops the surplus. Carrying informative groups to the next step would train on rollouts from
  older weights; TRL's importance-sampling correction is built for one generation batch, and
  keeping the data on-policy keeps the option honest. The cost is bounded by the cap.
- If the cap is reached first, the batch is filled with flat rows whose completion mask is zeroed:
  they are in the tensors (every process keeps the same shapes, which ZeRO-3 and
  ``steps_per_generation`` splits need) but absent from the loss, its gradient and the token count
  the ``dapo`` loss divides by.

Everything runs inside ``_generate_and_score_completions``, TRL's own generation + scoring call,
once per refill; the training loop, the buffer of ``steps_per_generation`` slices and the loss are
TRL's, untouched. Every process takes the same number of rounds (the decision uses counts gathered
from all of them), so the collectives inside TRL's call (weight sync, reward gather) stay paired
with vLLM colocate, server mode and ZeRO-3. Logged per step under ``dynamic_sampling/``:
``flat_group_share`` (first round: what plain GRPO would have trained on; logged with the option
off too, as TRL's ``frac_reward_zero_std`` is all-or-nothing under ``scale_rewards: batch``), ``groups_kept``,
``groups_dropped``, ``extra_prompts`` and ``masked_rows``. TRL's own per-round metrics (``reward``,
``frac_reward_zero_std``) average over every round of the step, refills included.
"""

from __future__ import annotations

import logging
import math

import torch
from accelerate.utils import gather_object
from trl import GRPOTrainer
from trl.trainer.utils import split_pixel_values_by_grid, unsplit_pixel_values_by_grid

from data_prep.errors import OpenMedixError

log = logging.getLogger(__name__)

# Per-row tensors padded on the left (TRL left-pads prompts); the pad value of each padded key.
LEFT_PADDED = {"prompt_ids": "pad", "prompt_mask": 0}
RIGHT_PADDED = {
    "completion_ids": "pad",
    "completion_mask": 0,
    "old_per_token_logps": 0.0,
    "ref_per_token_logps": 0.0,
    "sampling_per_token_logps": 0.0,
    "importance_sampling_ratio": 1.0,
    "tool_mask": 0,
}
PER_ROW_LISTS = ("pixel_values", "image_grid_thw", "num_images", "num_tiles")
# Per-token over prompt + completion (zeros on the completion part): padded on both sides.
PROMPT_AND_COMPLETION = ("mm_token_type_ids", "token_type_ids")


class DynamicSamplingError(OpenMedixError, RuntimeError):
    """A generation batch this trainer cannot merge."""


def flat_groups(rewards_per_func: torch.Tensor, weights: torch.Tensor, group: int, aggregation: str):
    """One bool per group of ``group`` consecutive rows: True where the rewards TRL normalises are all equal."""
    if aggregation == "normalize_then_sum":  # each term is normalised on its own: every term must be flat
        grouped = rewards_per_func.view(-1, group, rewards_per_func.size(1))
        spread = torch.nan_to_num(grouped.max(dim=1).values - grouped.min(dim=1).values, nan=0.0)
        return (spread.abs() <= 1e-6).all(dim=1)
    total = (rewards_per_func * weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
    grouped = total.view(-1, group)
    return (grouped.max(dim=1).values - grouped.min(dim=1).values).abs() <= 1e-6


def pad_to(t: torch.Tensor, width: int, value, left: bool) -> torch.Tensor:
    """``t`` (rows x w) padded with ``value`` to ``width`` columns."""
    extra = width - t.size(1)
    if extra <= 0:
        return t
    pad = torch.full((t.size(0), extra), value, dtype=t.dtype, device=t.device)
    return torch.cat([pad, t] if left else [t, pad], dim=1)


def pad_both(parts: list[torch.Tensor], prompt_widths: list[int]) -> torch.Tensor:
    """Rows of prompt + completion tensors from batches of different prompt widths, zero-padded on both sides."""
    prompts = [p[:, :w] for p, w in zip(parts, prompt_widths, strict=True)]
    completions = [p[:, w:] for p, w in zip(parts, prompt_widths, strict=True)]
    pw, cw = max(p.size(1) for p in prompts), max(c.size(1) for c in completions)
    rows = [
        torch.cat([pad_to(p, pw, 0, left=True), pad_to(c, cw, 0, left=False)], dim=1)
        for p, c in zip(prompts, completions, strict=True)
    ]
    return torch.cat(rows)


def take_rows(rounds: list[dict], picks: list[tuple[int, int]], pad_id: int) -> dict:
    """One batch of the rows ``picks`` = [(round, row)] from per-round outputs (pixel values split per row)."""
    rows = {key: [] for key in rounds[0] if key != "num_items_in_batch"}
    for key in rows:
        for r, i in picks:
            rows[key].append(
                rounds[r][key][i : i + 1] if torch.is_tensor(rounds[r][key]) else rounds[r][key][i]
            )
    merged = {}
    for key, parts in rows.items():
        if key in PROMPT_AND_COMPLETION:
            merged[key] = pad_both(parts, [rounds[r]["prompt_ids"].size(1) for r, _ in picks])
            continue
        if key in PER_ROW_LISTS:
            merged[key] = parts
            continue
        if not torch.is_tensor(parts[0]):
            raise DynamicSamplingError(f"dynamic sampling cannot merge the generation output {key!r}")
        if parts[0].dim() == 1:
            merged[key] = torch.cat(parts)
            continue
        pads = {**LEFT_PADDED, **RIGHT_PADDED}
        if key not in pads:
            raise DynamicSamplingError(f"dynamic sampling does not know how to pad {key!r}")
        value = pad_id if pads[key] == "pad" else pads[key]
        width = max(p.size(1) for p in parts)
        merged[key] = torch.cat([pad_to(p, width, value, key in LEFT_PADDED) for p in parts])
    return merged


def pick_rows(flat_per_round: list[torch.Tensor], want: int) -> tuple[list[tuple[int, int]], int]:
    """The first ``want`` informative rows over the rounds, topped up with flat rows: (picks, flat picked)."""
    informative = [(r, i) for r, flat in enumerate(flat_per_round) for i in range(len(flat)) if not flat[i]]
    picks = informative[:want]
    filler = [(r, i) for r, flat in enumerate(flat_per_round) for i in range(len(flat)) if flat[i]]
    short = want - len(picks)
    return picks + filler[:short], short


class DynamicSamplingGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with DAPO's dynamic sampling (see the module docstring); off, it is TRL's trainer."""

    def __init__(self, *args, dynamic_sampling: bool = False, max_refills: int = 2, **kwargs):
        super().__init__(*args, **kwargs)
        self.dynamic_sampling = dynamic_sampling
        self.max_refills = max_refills
        self._rewards_per_func = None
        self._refill_order: list[int] = []
        self._refill_epoch = 0
        self._extra_prompts = 0

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # TRL returns the rewards gathered from every process, in process order: kept to find flat groups
        self._rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._rewards_per_func

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        if not self.dynamic_sampling:  # TRL's step; the flat share is still logged, for comparison
            out = super()._generate_and_score_completions(inputs)
            share = self._flat_groups().float().mean().item()
            self._metrics["train"]["dynamic_sampling/flat_group_share"].append(share)
            return out
        want, rounds, flats, groups = len(inputs), [], [], []
        batch = inputs
        for refill in range(self.max_refills + 1):
            rounds.append(split_pixel_values_by_grid(super()._generate_and_score_completions(batch)))
            groups.append(self._flat_groups())
            flats.append(self._local_rows(groups[-1], len(batch)))
            have = sum(int((~f).sum()) for f in flats)
            deficit = want - self._fewest_over_processes(have)
            if refill == self.max_refills or deficit <= 0:
                break
            batch = self._refill_batch(self._refill_rows(deficit, groups, want))
        picks, short = pick_rows(flats, want)
        out = take_rows(rounds, picks, self.processing_class.tokenizer.pad_token_id)
        flat_picked = torch.tensor(
            [bool(flats[r][i]) for r, i in picks], device=out["completion_mask"].device
        )
        out["completion_mask"] = out["completion_mask"] * (~flat_picked).unsqueeze(1).int()
        loss_mask = out["completion_mask"] * out.get("tool_mask", 1)
        out["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        self._log_round_stats(groups, picks, flats, short)
        return unsplit_pixel_values_by_grid(out)

    def _refill_rows(self, deficit: int, groups: list[torch.Tensor], want: int) -> int:
        """Rows per process for the next refill: the deficit over the informative share seen so far, in whole
        groups, at most one generation batch."""
        informative = 1.0 - torch.cat(groups).float().mean().item()
        g = self.num_generations
        rows = g * math.ceil(deficit / max(informative, 0.25) / g)
        return min(rows, g * math.ceil(want / g))

    def _flat_groups(self) -> torch.Tensor:
        return flat_groups(
            self._rewards_per_func,
            self.reward_weights,
            self.num_generations,
            self.multi_objective_aggregation,
        )

    def _local_rows(self, flat_group: torch.Tensor, n_local: int) -> torch.Tensor:
        """This process's rows of the gathered batch (TRL's process slice), flat or not."""
        flat_row = flat_group.repeat_interleave(self.num_generations)
        start = self.accelerator.process_index * n_local
        return flat_row[start : start + n_local].cpu()

    def _fewest_over_processes(self, count: int) -> int:
        counts = self.accelerator.gather(torch.tensor([count], device=self.accelerator.device))
        return int(counts.min())

    def _refill_batch(self, rows: int) -> list[dict]:
        """This process's ``rows`` rows of a refill batch: prompts of a second shuffled pass over the training
        set (seed + 1, the same on every process), each repeated num_generations times, sliced like TRL's
        sampler slices a generation batch (process by process)."""
        g, n_proc = self.num_generations, self.accelerator.num_processes
        prompts = []
        while len(prompts) < rows * n_proc // g:
            if not self._refill_order:
                generator = torch.Generator().manual_seed(self.args.seed + 1 + self._refill_epoch)
                self._refill_order = torch.randperm(len(self.train_dataset), generator=generator).tolist()
                self._refill_epoch += 1
            prompts.append(self._refill_order.pop())
        self._extra_prompts += len(prompts)
        repeated = [i for i in prompts for _ in range(g)]
        mine = repeated[self.accelerator.process_index * rows : (self.accelerator.process_index + 1) * rows]
        return [self.train_dataset[i] for i in mine]

    def _log_round_stats(self, groups, picks, flats, short: int) -> None:
        g, rank = self.num_generations, self.accelerator.process_index
        local_groups = {(r, (rank * len(flats[r]) + i) // g) for r, i in picks if not flats[r][i]}
        kept = set().union(*gather_object([local_groups]))
        masked = self.accelerator.gather(torch.tensor([short], device=self.accelerator.device)).sum()
        metrics = self._metrics["train"]
        metrics["dynamic_sampling/flat_group_share"].append(groups[0].float().mean().item())
        metrics["dynamic_sampling/groups_kept"].append(float(len(kept)))
        metrics["dynamic_sampling/groups_dropped"].append(float(sum(int(f.sum()) for f in groups)))
        metrics["dynamic_sampling/extra_prompts"].append(float(self._extra_prompts))
        metrics["dynamic_sampling/masked_rows"].append(float(masked))
        self._extra_prompts = 0
