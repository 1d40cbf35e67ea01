"""GRPO's side of the reward server (rewards/server.py): async TRL reward functions that ask it.

A recipe moves a reward to the server by naming it in ``served_rewards``::

    reward_funcs: [answer, format, coordinate, grounding, report_labels]
    reward_weights: [1.0, 0.2, 0.0, 0.5, 1.0]
    reward_server: http://127.0.0.1:8765    # `make reward-server`; another node's address works too
    served_rewards: [report_labels]
    reward_server_timeout: 60               # seconds per attempt
    reward_server_retries: 3                # attempts after the first, 1 s, 2 s, 4 s apart

Every training process (every rank, every node) sends its own completions; the server batches them.
TRL 1.16 awaits async reward functions together on one event loop, so a served reward overlaps the
in-process ones' wait. Before training starts, ``check_reward_server`` asks the server once whether
it serves those rewards, so a wrong address fails in seconds rather than at the first step.

A dead or slow server never scores 0: after the retries the step raises ``RewardServerError``
naming the server, the reward and what to do; the run stops, and a rerun with the server back
resumes from its last checkpoint (``resume: true``, the default).
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from data_prep.errors import OpenMedixError
from rewards.inputs import column, texts_of

log = logging.getLogger(__name__)

BACKOFF_S = 1.0  # first pause between attempts; doubles each time


class RewardServerError(OpenMedixError, ConnectionError):
    """The reward server could not score a batch: down, too slow, or refusing the request."""


def _fix(url: str) -> str:
    return (
        f"Start it with `make reward-server` (on another node: REWARD_HOST=0.0.0.0, then {url} must name "
        "that node), raise reward_server_timeout if it is only slow, then rerun: training resumes from "
        "its last checkpoint."
    )


async def _post(client: httpx.AsyncClient, url: str, payload: dict, retries: int) -> dict:
    """POST /score with retries on connection errors, timeouts and 5xx; a 4xx is final."""
    last = None
    for attempt in range(retries + 1):
        if attempt:
            await asyncio.sleep(BACKOFF_S * 2 ** (attempt - 1))
        try:
            resp = await client.post(f"{url}/score", json=payload)
        except httpx.TimeoutException as e:
            last = f"no answer within {client.timeout.read:g} s ({type(e).__name__})"
            continue
        except httpx.TransportError as e:
            last = f"{type(e).__name__}: {e}"
            continue
        if resp.status_code < 400:
            return resp.json()
        detail = _detail(resp)
        if resp.status_code < 500:
            raise RewardServerError(f"reward server {url} refused reward '{payload['reward']}': {detail}")
        last = f"HTTP {resp.status_code}: {detail}"
    raise RewardServerError(
        f"reward server {url} did not score reward '{payload['reward']}' ({len(payload['completions'])} "
        f"completions) in {retries + 1} attempts: {last}. The step fails rather than score 0. {_fix(url)}"
    )


def _detail(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("detail", resp.text))
    except ValueError:
        return resp.text[:300]


def served_reward(name: str, url: str, timeout: float = 60.0, retries: int = 3):
    """An async TRL reward function named ``name`` that the server at ``url`` scores."""
    url = url.rstrip("/")

    async def reward(completions, **kwargs) -> list[float | None]:
        n = len(completions)
        payload = {
            "reward": name,
            "completions": texts_of(completions),
            "solutions": [str(s) for s in column(kwargs, "solution", n, name)],
            # required, as by the in-process report rewards: without it no row is a report, and the
            # reward would silently score nothing
            "tasks": column(kwargs, "task", n, name),
            "ids": [str(i) for i in range(n)],
        }
        async with httpx.AsyncClient(timeout=timeout) as client:
            out = await _post(client, url, payload, retries)
        if out.get("ids") != payload["ids"] or len(out.get("scores", ())) != n:
            raise RewardServerError(f"reward server {url} answered {name} for other completions than asked")
        return out["scores"]

    reward.__name__ = reward.__qualname__ = name  # TRL logs rewards/<name>/mean
    return reward


def check_reward_server(url: str, names: list[str], timeout: float = 10.0) -> dict:
    """GET /health once: the server is up and serves ``names``; its health dict, or RewardServerError."""
    url = url.rstrip("/")
    try:
        health = httpx.get(f"{url}/health", timeout=timeout).json()
    except (httpx.HTTPError, ValueError) as e:
        raise RewardServerError(
            f"reward server {url} is not reachable ({type(e).__name__}: {e}). {_fix(url)}"
        ) from None
    missing = [n for n in names if n not in health.get("rewards", [])]
    if missing:
        raise RewardServerError(
            f"reward server {url} does not serve {missing} (it serves {health.get('rewards')}): "
            "start it with those in --rewards, or take them out of served_rewards"
        )
    log.info("reward server %s serves %s (pid %s)", url, ", ".join(names), health.get("pid"))
    return health
