"""The study's comparison by a VLM judge, each pair asked in both orders.

    python -m evaluation.review judge STUDY --base_url http://localhost:8000/v1 --model Qwen/Qwen2.5-VL-32B-Instruct

The judge sees what a reviewer sees: the question (and the ground truth where the study shows it),
both responses as A and B, and two copies of the image, each with one response's cited boxes drawn
(red, numbered; answer boxes blue). It answers A, B or tie on every criterion of the study
(``study.CRITERIA``) as JSON. Each item is asked twice, with the runs in both orders; the analysis
(``analyse.combine_judge``) keeps a win only when both orders agree and counts swap-inconsistent
verdicts as ties. Verdicts go to the study's database (table ``judge``) as they come, so a rerun
asks only what is missing.

The endpoint is the cold-start judge's client (``data_prep.synthesis.teacher.ChatEndpoint``: the
``openai`` client, bounded retries, the key from ``--api_key_env``, 'EMPTY' for a local server).
Credentialed items are never sent to an endpoint off this machine without --allow_remote_credentialed.
Prompts are editable files in ``evaluation/review/templates/``.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import string
import threading
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from data_prep.errors import OpenMedixError
from data_prep.schema import is_credentialed
from data_prep.synthesis.coldstart import render
from data_prep.synthesis.teacher import ChatEndpoint, EndpointStop, RequestFailed, is_local_url
from evaluation.metrics import answer_boxes, cited_boxes, extract_answer, task_group
from evaluation.review import db
from evaluation.review.study import CRITERIA, CRITERION_KEYS, StudyError

log = logging.getLogger(__name__)
TEMPLATE_DIR = Path(__file__).parent / "templates"
CITED_RGB, ANSWER_RGB = (220, 38, 38), (37, 99, 235)


class JudgeStopped(OpenMedixError, RuntimeError):
    """The judge endpoint refused to go on (a refused key, an unknown model): asking more is pointless."""


# ----------------------------------------------------------------------------- prompt


def overlay_data_url(image_path: str, width: int, height: int, cited: list, answer: list) -> str:
    """The image with the cited boxes (red, numbered) and answer boxes (blue) drawn, as a PNG data URL."""
    with Image.open(image_path) as im:
        img = im.convert("RGB")
    sx, sy = img.width / width, img.height / height  # boxes are in the record's frame
    line = max(1, round(min(img.size) / 170))
    draw = ImageDraw.Draw(img)
    for color, boxes, numbered in ((ANSWER_RGB, answer, False), (CITED_RGB, cited, True)):
        for i, b in enumerate(boxes, 1):
            x0, x1 = sorted((b[0] * sx, b[2] * sx))
            y0, y1 = sorted((b[1] * sy, b[3] * sy))
            draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=color, width=line)
            if numbered:
                draw.text((x0 + line + 1, y0 + line), str(i), fill=color)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def load_templates(folder: str | Path = TEMPLATE_DIR) -> dict[str, string.Template]:
    return {n: string.Template((Path(folder) / f"judge_{n}.txt").read_text()) for n in ("system", "user")}


def judge_messages(item: dict, text_a: str, text_b: str, show_truth: bool, templates: dict) -> list[dict]:
    """The chat request for one order: A = ``text_a`` (left in a reviewer's terms), B = ``text_b``."""
    image = json.loads(item["images"])[0]
    w, h = item["width"], item["height"]
    grounding = task_group(item["task"]) == "grounding"

    def overlay(text: str) -> str:
        answer = answer_boxes(extract_answer(text)[0]) if grounding else []
        return overlay_data_url(image, w, h, cited_boxes(text), answer)

    values = {
        "width": w,
        "height": h,
        "criteria": "\n".join(f'- "{c.key}" ({c.label}): {c.question}' for c in CRITERIA),
        "reply_format": json.dumps({c.key: "A | B | tie" for c in CRITERIA}),
        "task": item["task"],
        "question": item["question"],
        "truth": f"Ground truth answer: {item['answer']}\n" if show_truth else "",
        "response_a": text_a,
        "response_b": text_b,
    }
    return [
        {"role": "system", "content": render(templates["system"], values)},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Image 1 (Response A's boxes):"},
                {"type": "image_url", "image_url": {"url": overlay(text_a)}},
                {"type": "text", "text": "Image 2 (Response B's boxes):"},
                {"type": "image_url", "image_url": {"url": overlay(text_b)}},
                {"type": "text", "text": render(templates["user"], values)},
            ],
        },
    ]


# ----------------------------------------------------------------------------- reply

_CHOICE_WORDS = {
    "a": "A",
    "response a": "A",
    "model a": "A",
    "b": "B",
    "response b": "B",
    "model b": "B",
    "tie": "tie",
    "equal": "tie",
    "both": "tie",
    "neither": "tie",
    "same": "tie",
}


def _choice(value) -> str | None:
    return _CHOICE_WORDS.get(str(value).strip().strip(".").lower()) if value is not None else None


def parse_verdict(text: str) -> dict[str, str | None]:
    """A / B / tie per criterion from the judge's reply (a JSON object, or key: value lines); None if unclear."""
    out: dict[str, str | None] = dict.fromkeys(CRITERION_KEYS)
    match = re.search(r"\{.*\}", text or "", re.DOTALL)
    if match:
        try:
            obj = json.loads(match.group(0))
            if isinstance(obj, dict):
                for key in CRITERION_KEYS:
                    out[key] = _choice(obj.get(key))
                return out
        except json.JSONDecodeError:
            pass
    for key in CRITERION_KEYS:
        m = re.search(rf'"?{key}"?\s*[:=]\s*"?([A-Za-z ]+?)"?\s*(?:[,}}\n]|$)', text or "")
        out[key] = _choice(m.group(1)) if m else None
    return out


# ----------------------------------------------------------------------------- running


def check_data_use(items: list, base_url: str, allow_remote: bool) -> None:
    creds = Counter(i["source"] for i in items if is_credentialed(i["source"]))
    if not creds or is_local_url(base_url):
        return
    sources = ", ".join(f"{s}: {n}" for s, n in creds.most_common())
    if not allow_remote:
        raise StudyError(
            f"Refusing to send {sum(creds.values())} credentialed item(s) ({sources}) to the judge endpoint "
            f"{base_url}, which is not on this machine: data use agreements forbid sending such data to "
            "services that may keep it or let people review it. Use a local server (e.g. vLLM on "
            "http://localhost:8000/v1), or, if the endpoint keeps nothing, trains on nothing and has no "
            "human review under an agreement you hold, pass --allow_remote_credentialed."
        )
    log.warning(
        "WARNING: sending credentialed items (%s) to %s (--allow_remote_credentialed)", sources, base_url
    )


@dataclass
class _Work:
    """What a judge run reads from the study before it asks anything."""

    settings: dict
    items: list[dict]
    texts: dict[str, dict[str, str]]  # item id -> run -> completion
    n_done: int  # (item, order) verdicts of this model already saved
    todo: list[tuple[dict, str, str]]  # (item, run shown as A, run shown as B)


def _load_work(path: Path, model: str, limit: int | None) -> _Work:
    with db.connect(path) as conn:
        settings = db.meta(conn)
        runs = db.run_names(conn)
        items = [dict(i) for i in db.items(conn)][:limit]
        texts = {i["item_id"]: db.completions(conn, i["item_id"]) for i in items}
        done = {
            (r["item_id"], r["run_a"])
            for r in conn.execute("SELECT item_id, run_a FROM judge WHERE model = ?", (model,))
        }
    todo = [
        (item, first, second)
        for item in items
        for first, second in ((runs[0], runs[1]), (runs[1], runs[0]))
        if (item["item_id"], first) not in done
    ]
    return _Work(settings, items, texts, len(done), todo)


def _ask_all(
    path: Path, model: str, todo: list, ask, concurrency: int, stop: threading.Event
) -> tuple[int, Counter[str]]:
    """Ask every job on ``concurrency`` threads, saving each verdict as it comes; (saved, failures
    by reason). An endpoint that stops the run (a refused key, an unknown model) cancels the rest."""
    failed: Counter[str] = Counter()
    saved = 0
    with db.connect(path) as conn, ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        pending = {pool.submit(ask, *job): job for job in todo}
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    item, first, second = pending.pop(fut)
                    try:
                        reply = fut.result()
                    except RequestFailed as e:
                        failed[e.reason] += 1
                        continue
                    verdicts = parse_verdict(reply.text)
                    db.save_judge(
                        conn,
                        model,
                        item["item_id"],
                        first,
                        second,
                        verdicts,
                        reply.text,
                        reply.prompt_tokens,
                        reply.completion_tokens,
                    )
                    saved += 1
        except EndpointStop as e:
            stop.set()
            for fut in pending:
                fut.cancel()
            raise JudgeStopped(str(e)) from None
    return saved, failed


def judge_study(
    study: str | Path,
    *,
    base_url: str,
    model: str,
    api_key_env: str = "OPENAI_API_KEY",
    azure_api_version: str | None = None,
    concurrency: int = 4,
    limit: int | None = None,
    show_truth: bool | None = None,
    allow_remote_credentialed: bool = False,
    timeout: float = 120.0,
    max_retries: int = 5,
    max_tokens: int = 300,
    templates: str | Path = TEMPLATE_DIR,
) -> dict:
    """Ask every missing (item, order) of the study; returns counts (asked, saved, failed, usage)."""
    path = db.study_db(study)
    work = _load_work(path, model, limit)
    check_data_use(work.items, base_url, allow_remote_credentialed)
    show_truth = work.settings.get("show_truth", False) if show_truth is None else show_truth
    tmpl = load_templates(templates)
    stop = threading.Event()
    endpoint = ChatEndpoint(
        role="judge",
        base_url=base_url,
        model=model,
        api_key_env=api_key_env,
        azure_api_version=azure_api_version,
        timeout=timeout,
        max_retries=max_retries,
        stop=stop,
    )

    def ask(item, first, second):
        t = work.texts[item["item_id"]]
        msgs = judge_messages(item, t[first], t[second], show_truth, tmpl)
        return endpoint.complete(msgs, temperature=0.0, max_completion_tokens=max_tokens)

    log.info(
        "judge %s: %d items x 2 orders; %d verdicts already saved, %d to ask",
        model,
        len(work.items),
        work.n_done,
        len(work.todo),
    )
    saved, failed = _ask_all(path, model, work.todo, ask, concurrency, stop)
    summary = {
        "asked": len(work.todo),
        "saved": saved,
        "failed": dict(failed),
        "usage": {
            k: endpoint.stats[k] for k in ("requests", "retries", "prompt_tokens", "completion_tokens")
        },
    }
    failures = (
        f"; failed {sum(failed.values())} ({', '.join(f'{k}: {n}' for k, n in failed.items())}): rerun to retry"
        if failed
        else ""
    )
    log.info("judge %s: saved %d of %d verdicts%s", model, saved, len(work.todo), failures)
    return summary
