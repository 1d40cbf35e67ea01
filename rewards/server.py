"""The reward server: report rewards scored in one process, batched, for every GRPO process.

    python -m rewards.server [--host 127.0.0.1] [--port 8765] [--rewards report_labels]
    make reward-server                    # the same; REWARD_HOST=0.0.0.0 to serve other nodes

Why a server: a clinical reward may need a model (a CheXbert labeler, RadGraph). Loaded in every
training process it costs each GPU its memory and each process its load time; served, it is loaded
once, and the requests of all processes and nodes are scored together in batches. GRPO calls it
through ``training.reward_client`` (an async TRL reward function), named in the recipe::

    reward_funcs: [answer, format, coordinate, grounding, report_labels]
    reward_server: http://127.0.0.1:8765
    served_rewards: [report_labels]

Served rewards (``SERVED``; ``--rewards`` picks, default report_labels):
  report_labels           the rule-based labeler's agreement: the in-process reward's own function, so
                          moving it to the server changes where it runs, never what it returns
  report_labels_chexbert  the same agreement with CheXbert's labels (rewards/chexbert.py: the model
                          loads once at start-up; the weights come from `make fetch-metric-weights`)

API (JSON over HTTP):
  GET  /health  -> {"status": "ok", "rewards": [...], "batches", "items", "requests", "pid"}
  POST /score   {"reward": name, "completions": [str], "solutions": [str], "tasks": [str | null],
                 "ids": [str] (optional, echoed back)}
             -> {"reward": name, "scores": [float | null], "ids": [...]}
  An unknown reward is a 404, a malformed request a 422, both with a message; the client does not
  retry those. Scoring is pure, so a retried request is harmless.

Batching: each reward has a queue. A worker takes the first waiting request, then keeps taking
requests until ``--max_batch`` completions are gathered or ``--max_wait_ms`` has passed, scores
them in one call on a worker thread (the event loop keeps accepting requests meanwhile) and hands
each request back its own slice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel

from rewards.clinical import chexbert_label_scores, report_labels_score

log = logging.getLogger(__name__)
Item = tuple[str, str, str | None]  # (completion text, solution, task)


def rule_labels() -> Callable[[list[Item]], list]:
    """``report_labels``: the rule-based labeler, the in-process reward's own function per completion."""
    return lambda items: [report_labels_score(text, solution, task) for text, solution, task in items]


def chexbert_labels() -> Callable[[list[Item]], list]:
    """``report_labels_chexbert``: the same agreement with CheXbert's labels; the model loads here, once."""
    from rewards.chexbert import CheXbertLabeler

    labeler, cache = CheXbertLabeler(), {}
    return lambda items: chexbert_label_scores(labeler.label, items, cache)


# name -> what builds its batch scorer (items -> scores) at start-up: a model loads once, there.
SERVED: dict[str, Callable[[], Callable[[list[Item]], list]]] = {
    "report_labels": rule_labels,
    "report_labels_chexbert": chexbert_labels,
}
MAX_ITEMS_PER_REQUEST = 65536  # a request is one GRPO batch of one process; more is a client bug


class ScoreRequest(BaseModel):
    reward: str
    completions: list[str]
    solutions: list[str]
    tasks: list[str | None]
    ids: list[str] | None = None


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    requests: int = 0
    largest_batch: int = 0


@dataclass
class Batcher:
    """Gathers concurrent requests for one reward into batches scored on a worker thread."""

    score_batch: Callable[[list[Item]], list]
    max_batch: int = 512
    max_wait_s: float = 0.005
    stats: BatchStats = field(default_factory=BatchStats)

    def __post_init__(self):
        self.queue: asyncio.Queue = asyncio.Queue()

    async def submit(self, items: list[Item]) -> list[float | None]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((items, future))
        return await future

    async def next_jobs(self) -> list[tuple[list, asyncio.Future]]:
        """The first waiting request, then whatever arrives within max_wait_s, up to max_batch items."""
        loop = asyncio.get_running_loop()
        jobs = [await self.queue.get()]
        size, deadline = len(jobs[0][0]), loop.time() + self.max_wait_s
        while size < self.max_batch:
            if self.queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self.queue.get(), remaining))
                except TimeoutError:
                    break
            else:
                jobs.append(self.queue.get_nowait())
            size += len(jobs[-1][0])
        return jobs

    async def run(self) -> None:
        while True:
            jobs = await self.next_jobs()
            flat = [item for items, _ in jobs for item in items]
            try:
                scores = await asyncio.to_thread(self.score_batch, flat)
            except Exception as e:  # a scorer bug answers every waiting request, never hangs them
                log.exception("scoring a batch of %d failed", len(flat))
                for _, future in jobs:
                    if not future.done():
                        future.set_exception(e)
                continue
            start = 0
            for items, future in jobs:
                if not future.done():  # the client may have gone
                    future.set_result(scores[start : start + len(items)])
                start += len(items)
            self.stats.batches += 1
            self.stats.items += len(flat)
            self.stats.requests += len(jobs)
            self.stats.largest_batch = max(self.stats.largest_batch, len(flat))


def create_app(rewards: list[str], max_batch: int = 512, max_wait_ms: float = 5.0):
    """The FastAPI app serving ``rewards`` (names in SERVED), one Batcher each. Models load here, before
    the server listens: a missing model stops start-up with its message (rewards.chexbert.MissingWeights)."""
    from fastapi import FastAPI, HTTPException

    unknown = [r for r in rewards if r not in SERVED]
    if unknown:
        raise ValueError(f"cannot serve {unknown}: the reward server knows {sorted(SERVED)}")
    scorers = {name: SERVED[name]() for name in rewards}
    batchers: dict[str, Batcher] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        for name in rewards:  # the queues belong to the server's event loop
            batchers[name] = Batcher(scorers[name], max_batch, max_wait_ms / 1000)
        workers = [asyncio.create_task(b.run()) for b in batchers.values()]
        log.info(
            "reward server ready: %s (batches of up to %d, %.1f ms wait)", rewards, max_batch, max_wait_ms
        )
        yield
        for w in workers:
            w.cancel()

    app = FastAPI(title="OpenMedix-R1 reward server", lifespan=lifespan)

    @app.get("/health")
    async def health():
        totals = [b.stats for b in batchers.values()]
        return {
            "status": "ok",
            "rewards": sorted(batchers),
            "pid": os.getpid(),
            "batches": sum(s.batches for s in totals),
            "items": sum(s.items for s in totals),
            "requests": sum(s.requests for s in totals),
            "largest_batch": max((s.largest_batch for s in totals), default=0),
        }

    @app.post("/score")
    async def score(req: ScoreRequest):
        if req.reward not in batchers:
            raise HTTPException(404, f"reward '{req.reward}' is not served here; served: {sorted(batchers)}")
        n = len(req.completions)
        lengths = {"solutions": len(req.solutions), "tasks": len(req.tasks)}
        if req.ids is not None:
            lengths["ids"] = len(req.ids)
        bad = {k: v for k, v in lengths.items() if v != n}
        if bad or n > MAX_ITEMS_PER_REQUEST:
            raise HTTPException(
                422, f"{n} completions but {bad or 'too many'} (at most {MAX_ITEMS_PER_REQUEST})"
            )
        scores = await batchers[req.reward].submit(list(zip(req.completions, req.solutions, req.tasks)))
        return {"reward": req.reward, "scores": scores, "ids": req.ids}

    return app


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept other nodes' training processes")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument(
        "--rewards",
        nargs="+",
        default=["report_labels"],
        choices=sorted(SERVED),
        help="default: report_labels",
    )
    ap.add_argument("--max_batch", type=int, default=512, help="completions scored in one call at most")
    ap.add_argument("--max_wait_ms", type=float, default=5.0, help="how long a batch waits for more requests")
    args = ap.parse_args(argv)
    import uvicorn

    from rewards.chexbert import MissingWeights

    try:
        app = create_app(args.rewards, args.max_batch, args.max_wait_ms)
    except MissingWeights as e:
        raise SystemExit(f"reward server: {e}") from None
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    logging.basicConfig(format="%(message)s", level=logging.INFO)
    main()
