"""Dynamic sampling (training/dynamic_sampling.py) and the frozen vision tower (training/freeze.py).

The batch-level tests run TRL's own generation + scoring (transformers generation, tiny model, phantom
prompts) with a reward that is flat for every classification prompt and spread for every other one,
so which groups are flat is known without trusting the code under test.
"""

from __future__ import annotations

import torch
from trl import GRPOConfig
from trl.trainer.utils import split_pixel_values_by_grid, unsplit_pixel_values_by_grid

from data_prep.trl_dataset import grpo_dataset, image_boxes, load_checked_records
from training.common import load_processor
from training.dynamic_sampling import DynamicSamplingGRPOTrainer, flat_groups, pick_rows, take_rows
from training.freeze import freeze_vision_tower, is_vision_parameter

G = 4  # completions per prompt


def flat_for_classification(completions, task, **kwargs) -> list[float]:
    """Classification prompts: the same reward for every completion (a flat group); other tasks: a reward
    that differs between completions (their lengths)."""
    return [0.5 if t == "classification" else float(len(c[0]["content"])) for c, t in zip(completions, task)]


# --- the pieces, on hand-made tensors ---------------------------------------------------------------


def test_flat_groups_follow_what_trl_normalises():
    rewards = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, float("nan")], [0.5, 0.0]])
    weights = torch.tensor([1.0, 1.0])
    # sums: group 0 (1, 1) flat; group 1 (2, 1) not; group 2 (0.5 + nan->0, 0.5) flat
    assert flat_groups(rewards, weights, 2, "sum_then_normalize").tolist() == [True, False, True]
    # group 1 (1,1)+(0,1): term 0 differs -> not flat; terms equal within group 0 -> flat
    # group 1 as (1, 0) vs (0, 1) sums to 1 and 1: flat for sum_then_normalize, not when each term counts
    swapped = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert flat_groups(swapped, weights, 2, "sum_then_normalize").tolist() == [True]
    assert flat_groups(swapped, weights, 2, "normalize_then_sum").tolist() == [False]


def test_pick_rows_takes_informative_rows_first_and_tops_up_with_flat_ones():
    first = torch.tensor([True, True, False, False])
    refill = torch.tensor([False, True])
    assert pick_rows([first, refill], 4) == ([(0, 2), (0, 3), (1, 0), (0, 0)], 1)
    assert pick_rows([first], 2) == ([(0, 2), (0, 3)], 0)


def test_take_rows_pads_prompts_left_completions_right_and_keeps_images_per_row():
    a = {
        "prompt_ids": torch.tensor([[7, 8], [9, 10]]),
        "prompt_mask": torch.ones(2, 2, dtype=torch.long),
        "completion_ids": torch.tensor([[1, 2, 3], [4, 5, 6]]),
        "completion_mask": torch.ones(2, 3, dtype=torch.long),
        "mm_token_type_ids": torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0]]),
        "advantages": torch.tensor([0.5, -0.5]),
        "pixel_values": [torch.zeros(4, 3), torch.ones(4, 3)],
        "num_images": [1, 1],
        "num_items_in_batch": torch.tensor(6),
    }
    b = {
        "prompt_ids": torch.tensor([[11, 12, 13]]),
        "prompt_mask": torch.ones(1, 3, dtype=torch.long),
        "completion_ids": torch.tensor([[14]]),
        "completion_mask": torch.ones(1, 1, dtype=torch.long),
        "mm_token_type_ids": torch.tensor([[1, 1, 1, 0]]),
        "advantages": torch.tensor([1.0]),
        "pixel_values": [torch.full((4, 3), 2.0)],
        "num_images": [1],
        "num_items_in_batch": torch.tensor(1),
    }
    out = take_rows([a, b], [(0, 1), (1, 0)], pad_id=0)
    assert out["prompt_ids"].tolist() == [[0, 9, 10], [11, 12, 13]]
    assert out["prompt_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert out["completion_ids"].tolist() == [[4, 5, 6], [14, 0, 0]]
    assert out["completion_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["mm_token_type_ids"].tolist() == [[0, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]]
    assert out["advantages"].tolist() == [-0.5, 1.0]
    assert [p[0, 0].item() for p in out["pixel_values"]] == [1.0, 2.0] and out["num_images"] == [1, 1]


# --- TRL's own generation and scoring on the tiny model -------------------------------------------------


def make_trainer(model, data, out, **kwargs) -> DynamicSamplingGRPOTrainer:
    processor = load_processor(model, data, None, None, require_frame=True)
    records = load_checked_records(data, "train", tasks=["vqa", "classification"])
    args = GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=4 * G, num_generations=G, max_completion_length=8,
        use_cpu=True, report_to="none", beta=0.0, loss_type="dapo", learning_rate=1e-3, seed=1,
        max_steps=1, save_strategy="no", logging_steps=1, disable_tqdm=True,
    )  # fmt: skip
    return DynamicSamplingGRPOTrainer(
        model=str(model),
        reward_funcs=[flat_for_classification],
        args=args,
        train_dataset=grpo_dataset(records, data, image_boxes(records)),
        processing_class=processor,
        **kwargs,
    )


def first_batch(trainer) -> list[dict]:
    trainer.model.train()
    return next(iter(trainer.get_train_dataloader()))


def grads_of(trainer, batch) -> tuple[float, dict]:
    trainer.model.zero_grad()
    trainer.current_gradient_accumulation_steps = 1
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


def test_flat_groups_are_absent_from_the_loss_and_its_gradients(tiny_dir, phantom_dir, tmp_path):
    trainer = make_trainer(tiny_dir, phantom_dir, tmp_path, dynamic_sampling=True, max_refills=0)
    inputs = first_batch(trainer)
    flat_rows = [x["task"] == "classification" for x in inputs]
    assert any(flat_rows) and not all(flat_rows), "the seed should draw both kinds of prompt"
    out = trainer._generate_and_score_completions(inputs)
    # no refill allowed: the flat rows stay in the tensors with their completions masked out
    assert out["completion_mask"].sum(1).eq(0).tolist() == flat_rows
    assert int(out["num_items_in_batch"]) == int(out["completion_mask"].sum())
    logged = trainer._metrics["train"]
    assert logged["dynamic_sampling/masked_rows"] == [float(sum(flat_rows))]
    assert logged["dynamic_sampling/groups_dropped"] == [float(sum(flat_rows) // G)]
    assert logged["dynamic_sampling/groups_kept"] == [float((len(flat_rows) - sum(flat_rows)) // G)]

    loss, grads = grads_of(trainer, out)
    keep = [i for i, flat in enumerate(flat_rows) if not flat]
    per_row = split_pixel_values_by_grid(out)  # as the trainer merges rounds: images per row
    informative_only = unsplit_pixel_values_by_grid(take_rows([per_row], [(0, i) for i in keep], pad_id=0))
    informative_only["num_items_in_batch"] = out["num_items_in_batch"]
    loss_informative, grads_informative = grads_of(trainer, informative_only)
    # the same loss and the same gradient as a batch that never held the flat groups ...
    assert abs(loss - loss_informative) < 1e-6
    assert grads.keys() == grads_informative.keys()
    for name, g in grads.items():
        torch.testing.assert_close(g, grads_informative[name], rtol=1e-4, atol=1e-7, msg=name)
    # ... while TRL's own batch (flat rows trained, counted in the token-mean) gives another gradient
    unmasked = dict(out, completion_mask=out["completion_mask"].clone())
    for i in range(len(flat_rows)):
        if flat_rows[i]:
            unmasked["completion_mask"][i] = (out["completion_ids"][i] != 0).long()
    unmasked["num_items_in_batch"] = unmasked["completion_mask"].sum()
    _, grads_trl = grads_of(trainer, unmasked)
    assert any(not torch.allclose(grads_trl[n], grads[n]) for n in grads)


def test_refills_replace_flat_groups_with_informative_ones(tiny_dir, phantom_dir, tmp_path):
    trainer = make_trainer(tiny_dir, phantom_dir, tmp_path, dynamic_sampling=True, max_refills=3)
    inputs = first_batch(trainer)
    n_flat = sum(x["task"] == "classification" for x in inputs)
    out = trainer._generate_and_score_completions(inputs)
    logged = trainer._metrics["train"]
    assert logged["dynamic_sampling/flat_group_share"] == [n_flat / len(inputs)]
    assert logged["dynamic_sampling/extra_prompts"][0] >= n_flat // G  # refilled at least the flat groups
    assert logged["dynamic_sampling/masked_rows"] == [0.0]
    assert out["completion_mask"].sum(1).gt(0).all()  # every row trains, none of them flat
    assert out["advantages"].shape == (len(inputs),) and out["prompt_ids"].size(0) == len(inputs)
    assert int(out["num_items_in_batch"]) == int(out["completion_mask"].sum())


def test_off_it_is_trls_batch_with_the_flat_share_logged(tiny_dir, phantom_dir, tmp_path):
    trainer = make_trainer(tiny_dir, phantom_dir, tmp_path)
    inputs = first_batch(trainer)
    out = trainer._generate_and_score_completions(inputs)
    n_flat = sum(x["task"] == "classification" for x in inputs)
    assert trainer._metrics["train"]["dynamic_sampling/flat_group_share"] == [n_flat / len(inputs)]
    assert "dynamic_sampling/masked_rows" not in trainer._metrics["train"]
    assert out["completion_mask"].sum(1).gt(0).all()  # TRL trains on every row, flat or not


def test_frozen_vision_tower_is_untouched_while_the_language_model_learns(tiny_dir, phantom_dir, tmp_path):
    trainer = make_trainer(tiny_dir, phantom_dir, tmp_path / "run")
    frozen = freeze_vision_tower(trainer.model)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    assert frozen == sum(p.numel() for n, p in before.items() if is_vision_parameter(n)) > 0
    trainer.train()
    after = dict(trainer.model.named_parameters())
    vision = [n for n in before if is_vision_parameter(n)]
    assert vision and all(torch.equal(before[n], after[n]) for n in vision)  # bitwise
    assert any(not torch.equal(before[n], after[n]) for n in before if not is_vision_parameter(n))
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not any(id(after[n]) in in_optimizer for n in vision)  # no optimizer state for them
    trainer.save_model(str(tmp_path / "saved"))
    from transformers import AutoModelForImageTextToText

    saved = dict(AutoModelForImageTextToText.from_pretrained(tmp_path / "saved").named_parameters())
    assert saved.keys() == before.keys()  # the checkpoint is whole ...
    assert all(torch.equal(saved[n], before[n]) for n in vision)  # ... with the vision weights as they were
