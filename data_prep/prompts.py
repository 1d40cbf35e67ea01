"""Prompt building, in one place: a record becomes a conversational prompt and a completion.

Stage 1 (instruction fine-tuning) asks the question and expects ``\\boxed{answer}``.
Stages 2 and 3 (cold start, GRPO) add the paper's reasoning instruction and expect
``<think> reasoning citing [x_min, y_min, x_max, y_max] boxes </think>. The answer is: \\boxed{answer}``.
The instruction follows the content described in paper-notes.md (our wording): the task text,
a blank line, then the instruction; no separate system prompt.
"""

from __future__ import annotations

from data_prep.schema import IMAGE_TOKEN, record_images

REASONING_INSTRUCTION = (
    "Think first, as an internal monologue inside <think> </think>. While reasoning, analyse local "
    "regions of the image and cite each one as a box [x_min, y_min, x_max, y_max] in image pixels. "
    "Put the final answer in \\boxed{}, e.g. <think> finding 1 with [x1, y1, x2, y2]; finding 2 "
    "with [...] </think>. The answer is: \\boxed{answer}"
)
# Families that ground in relative coordinates (Qwen3-VL, data_prep.families) are asked for those.
RELATIVE_REASONING_INSTRUCTION = REASONING_INSTRUCTION.replace(
    "in image pixels", "in coordinates relative to the image, from 0 to 1000"
)
ANSWER_LEAD = "The answer is: "


def reasoning_instruction(family=None) -> str:
    return RELATIVE_REASONING_INSTRUCTION if family is not None and family.relative else REASONING_INSTRUCTION


def question_text(record: dict, reasoning: bool, family=None) -> str:
    q = record["question"].strip()
    return f"{q}\n\n{reasoning_instruction(family)}" if reasoning else q


def user_content(text: str, n_images: int) -> list[dict]:
    """Content items of a user turn: each ``<image>`` placeholder becomes an image item at its place;
    without placeholders the images come first (the Qwen-VL and TRL convention)."""
    if IMAGE_TOKEN not in text:
        return [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": text}]
    parts = text.split(IMAGE_TOKEN)
    if len(parts) - 1 != n_images:
        raise ValueError(f"{len(parts) - 1} {IMAGE_TOKEN} placeholder(s) for {n_images} image(s)")
    items: list[dict] = []
    for i, part in enumerate(parts):
        if i:
            items.append({"type": "image"})
        if part.strip():
            items.append({"type": "text", "text": part.strip() if i == len(parts) - 1 else part.lstrip()})
    return items


def build_prompt(record: dict, reasoning: bool, family=None) -> list[dict]:
    """The user turn: the image(s), then the question (plus the reasoning instruction, in the box
    convention of ``family``, a data_prep.families.Family; None: Qwen2.5-VL's absolute pixels)."""
    n = len(record_images(record))
    return [{"role": "user", "content": user_content(question_text(record, reasoning, family), n)}]


def answer_text(answer: str) -> str:
    return f"\\boxed{{{answer}}}"


def reasoning_text(reasoning: str, answer: str) -> str:
    return f"<think> {reasoning.strip()} </think>. {ANSWER_LEAD}{answer_text(answer)}"
