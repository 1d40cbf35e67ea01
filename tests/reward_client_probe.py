"""One training process's side of tests/test_reward_server.py: N concurrent requests to the server.

    python -m tests.reward_client_probe URL PROCESS_INDEX N_REQUESTS OUT_JSON

Each request is one batch of completions built by ``requests_of(process_index, n)``, sent through
``training.reward_client.served_reward`` (the async reward function GRPO uses), all at once with
asyncio.gather, as TRL's event loop would await them. OUT_JSON: {request index: scores}.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

SENTENCES = (
    "Mild cardiomegaly.",
    "The heart size is normal.",
    "Small left pleural effusion.",
    "No pleural effusion or pneumothorax.",
    "Possible right lower lobe consolidation.",
    "The lungs are clear.",
    "Moderate pulmonary edema.",
    "There is no focal consolidation.",
    "Bibasilar atelectasis.",
    "Right apical pneumothorax.",
    "Degenerative changes of the spine.",
    "No acute cardiopulmonary process.",
)
TASKS = ("report_findings", "report_impression", "vqa", "grounding")


def report(rng: random.Random) -> str:
    return " ".join(rng.sample(SENTENCES, rng.randint(1, 4)))


def completion(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.1:
        return "<think>the heart looks big</think> cardiomegaly"  # no boxed answer: 0 on reports
    return f"<think>Looking at the lungs and heart [10, 10, 50, 50].</think>\n\\boxed{{{report(rng)}}}"


def requests_of(process_index: int, n: int, size: int = 16) -> list[dict]:
    """n requests of ``size`` completions, the same for the same process index."""
    rng = random.Random(1000 + process_index)
    out = []
    for _ in range(n):
        out.append(
            {
                "completions": [completion(rng) for _ in range(size)],
                "solution": [report(rng) for _ in range(size)],
                "task": [rng.choice(TASKS) for _ in range(size)],
            }
        )
    return out


async def send_all(url: str, process_index: int, n: int) -> dict[int, list]:
    from training.reward_client import served_reward

    reward = served_reward("report_labels", url, timeout=60, retries=0)
    batches = requests_of(process_index, n)
    scores = await asyncio.gather(*(reward(**b) for b in batches))
    return dict(enumerate(scores))


def main() -> None:
    url, index, n, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    scores = asyncio.run(send_all(url, index, n))
    with open(out, "w") as f:
        json.dump(scores, f)


if __name__ == "__main__":
    main()
