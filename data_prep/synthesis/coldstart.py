r"""Cold-start data: a teacher writes grounded reasoning for records; filters keep the valid ones.

For every selected record the teacher is shown the image, the question, the ground-truth
answer (and ground-truth boxes where the record has them) and asked for the paper's format,
``<think> reasoning citing [x_min, y_min, x_max, y_max] boxes </think>. The answer is: \boxed{answer}``,
with boxes in the record's model frame. Prompts: data_prep/synthesis/templates/*.txt ($placeholders).

Filters, each counted in the ledger with its reason, use the grounded rewards' rules
(rewards/grounded.py) so the kept targets earn full marks there: the format (one think block,
then one \boxed{} answer); every cited box valid in the frame; at least one box; the boxed
answer agrees with the ground truth; optionally a judge model (a second endpoint) shown each
cited box drawn on the image and the sentence citing it answers yes/no, and any "no" rejects.

Output, a dataset folder the SFT stage reads like any other:
    OUT/coldstart.jsonl  kept records (the original record, ``reasoning`` filled, meta["teacher"]),
                         appended as they come; a rerun skips ids already here or in rejects
    OUT/rejects.jsonl    {"id", "reason", "detail", "completion"} per rejected record, appended
    OUT/records.jsonl    every kept record, written atomically at the end (images re-pointed)
    OUT/frame.json       copied from the source dataset, plus the source folder as an image root
    OUT/ledger.json      counts, reasons, failed ids, tokens, estimated cost; rewritten (atomically)
                         after every record, so even a killed run leaves one that adds up:
                         read = already_kept + already_rejected + written + rejected + failed + unfinished
    OUT/.coldstart.lock  held while a run writes (a second run on the same OUT stops)
Requests that fail for good (retries spent; a malformed reply is retried like an error) are
counted as failed, not rejected: a rerun retries them (exit code 1 says there were some). An
unexpected error on one record stops the run (before more is spent), that record counted as failed.
A record whose image lies outside the dataset folder (data_prep.io.resolve_image) is rejected
unread: nothing a record merely names is sent. Credentialed sources (MIMIC-CXR, VinDr, ...)
are never sent to an endpoint off this machine without --allow_remote_credentialed.

Usage:
    # no API: deterministic reasoning from the phantom data's known findings
    python -m data_prep.synthesis.coldstart --data data/phantom --out data/coldstart --teacher offline
    # a local vLLM server (`vllm serve Qwen/Qwen2.5-VL-32B-Instruct`)
    python -m data_prep.synthesis.coldstart --data data/mix --out data/coldstart --teacher openai \
        --base_url http://localhost:8000/v1 --model Qwen/Qwen2.5-VL-32B-Instruct
    # OpenAI (key from $OPENAI_API_KEY); --dry_run prints the request and sends nothing
    python -m data_prep.synthesis.coldstart --data data/mix --out data/coldstart --teacher openai \
        --base_url https://api.openai.com/v1 --model gpt-4.1 --dry_run
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import io
import json
import logging
import os
import re
import string
import sys
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw
from tqdm import tqdm

from data_prep.errors import OpenMedixError, setup_logging, user_errors
from data_prep.frame import IMAGE_ROOTS, frame_rule, read_frame
from data_prep.io import (
    OUTSIDE,
    RECORDS,
    ImagePathError,
    Ledger,
    atomic_write_text,
    image_paths,
    image_roots,
    iter_jsonl,
    map_images,
    read_records,
    write_jsonl,
)
from data_prep.schema import RecordError, is_credentialed, validate_record
from data_prep.synthesis.offline_teacher import STYLES, offline_completion, parse_unboxed
from data_prep.synthesis.teacher import (
    ChatEndpoint,
    EndpointStop,
    RequestFailed,
    image_data_url,
    is_local_url,
)
from rewards.boxes import INVALID, MIN_BOX_SIDE, box_status
from rewards.grounded import answer_kind, answer_score, format_score, normalize_answer
from rewards.parsing import BOX_RE, format_box, parse, strip_think

TEMPLATE_DIR = Path(__file__).parent / "templates"
KEPT_FILE, REJECTS_FILE, LEDGER_FILE, LOCK_FILE = (
    "coldstart.jsonl",
    "rejects.jsonl",
    "ledger.json",
    ".coldstart.lock",
)
# GPT-4.1 list prices (USD per 1M tokens, 2025); local endpoints default to 0.
DEFAULT_PRICE_IN, DEFAULT_PRICE_OUT = 2.0, 8.0
MIN_REPORT_SCORE = 0.8  # report answers: rewards' word BLEU-4/ROUGE-L mix of the copy vs the truth
BRACKETS_RE = re.compile(r"\[[^\[\]]*\d[^\[\]]*\]")
SENTENCE_RE = re.compile(r"(?<=[.;!?])\s+")
log = logging.getLogger(__name__)

DATA_USE_REFUSAL = """\
Refusing to send {n} record(s) from credentialed sources ({sources}) to the {role} endpoint
{url}, which is not on this machine.

These datasets are under the PhysioNet Credentialed Health Data Use Agreement (or similar
terms). It forbids sending the data to online services that may retain it or let people
review it (as most chat APIs do by default). A remote API is acceptable only when the provider
guarantees zero data retention, no use for training and no human review, under an agreement
that you hold.

Use a local OpenAI-compatible server instead, e.g.
    vllm serve Qwen/Qwen2.5-VL-32B-Instruct --port 8000
and pass --base_url http://localhost:8000/v1 --model Qwen/Qwen2.5-VL-32B-Instruct
(--judge_base_url likewise), or make the cold-start set from non-credentialed sources.
If your remote endpoint meets those terms, pass --allow_remote_credentialed to say so."""


class ColdstartError(OpenMedixError, ValueError):
    """The data, the prompt templates or OUT do not allow a run: the user's to fix."""


class RunStopped(OpenMedixError, RuntimeError):
    """The run stopped early (an endpoint refusing the key, an unexpected error, Ctrl-C); what was
    finished is kept and a rerun goes on from there."""


class Rejected(OpenMedixError):
    """A completion the filters do not keep: the ledger's reason and its detail."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass
class Templates:
    coldstart_system: string.Template
    coldstart_user: string.Template
    judge_system: string.Template
    judge_user: string.Template

    @classmethod
    def load(cls, folder: Path) -> Templates:
        return cls(
            **{name: string.Template((folder / f"{name}.txt").read_text()) for name in cls.__annotations__}
        )


def render(template: string.Template, values: dict) -> str:
    try:
        return template.substitute(values).strip()
    except (KeyError, ValueError) as e:
        raise ColdstartError(
            f"A prompt template uses an unknown placeholder {e} (known: {', '.join('$' + k for k in values)}; "
            "write a literal dollar sign as $$)."
        ) from None


def teacher_messages(
    record: dict, image_url: str | list[str], templates: Templates, detail: str
) -> list[dict]:
    """The teacher's request; several images (a multi-view study) are sent in order, the boxes on the first."""
    urls = [image_url] if isinstance(image_url, str) else list(image_url)
    gt = "\n".join(f"- {b['label']}: {format_box(b['box'])}" for b in record["boxes"])
    values = {
        "width": record["width"],
        "height": record["height"],
        "task": record["task"],
        "question": record["question"],
        "answer": record["answer"],
        "gt_boxes": gt or "none listed (cite the regions you examine)",
    }
    return [
        {"role": "system", "content": render(templates.coldstart_system, values)},
        {
            "role": "user",
            "content": [
                *({"type": "image_url", "image_url": {"url": u, "detail": detail}} for u in urls),
                {"type": "text", "text": _views_note(len(urls)) + render(templates.coldstart_user, values)},
            ],
        },
    ]


def _views_note(n: int) -> str:
    if n == 1:
        return ""
    return f"The study has {n} images, in order; every box refers to image 1 and is cited in its pixels.\n\n"


def judge_messages(
    image_url: str, box: list, sentence: str, record: dict, templates: Templates
) -> list[dict]:
    values = {
        "box": format_box(box),
        "sentence": sentence,
        "width": record["width"],
        "height": record["height"],
    }
    return [
        {"role": "system", "content": render(templates.judge_system, values)},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_url}},
                {"type": "text", "text": render(templates.judge_user, values)},
            ],
        },
    ]


# ---------------------------------------------------------------- filters


def check_completion(record: dict, text: str, finish_reason: str | None = None) -> str:
    """The reasoning of a valid completion (think-block text, boxes written canonically), else Rejected.

    The rules are the grounded rewards' (rewards/grounded.py), so cold-start targets earn full
    format and answer scores there: ``format_score`` 1, every cited box ``box_status`` valid in
    the record's frame, at least one box, and the answer a normalised copy of the ground truth or
    ``answer_score`` 1 (reports: >= MIN_REPORT_SCORE).
    """
    if finish_reason == "length":
        raise Rejected("format: cut off at the token limit", "raise --max_tokens")
    if finish_reason == "content_filter":
        raise Rejected("teacher refused: content filter")
    p = parse(text)
    if p.n_open != 1 or p.n_close != 1 or not text.lstrip().startswith("<think>"):
        raise Rejected("format: not exactly one <think> block at the start", text[:200])
    if p.answer is None:
        raise Rejected("format: no single \\boxed{} answer after </think>", text[-200:])
    if format_score(text) != 1.0:
        raise Rejected(
            "format: fails the grounded format reward",
            "reasoning under 3 words, \\boxed{} in the reasoning, long or marked-up lead-in, text after "
            "the answer, or repetition: " + text[:200],
        )
    reasoning = BOX_RE.sub(lambda m: format_box([float(v) for v in m.groups()]), p.think.strip())
    w, h = record["width"], record["height"]
    for bracket in BRACKETS_RE.findall(reasoning):
        m = BOX_RE.fullmatch(bracket)
        if not m:
            raise Rejected("box: invalid", f"{bracket} is not [x_min, y_min, x_max, y_max]")
        if box_status([int(v) for v in m.groups()], w, h) == INVALID:
            raise Rejected(
                "box: invalid",
                f"{bracket} is outside the {w}x{h} frame, inverted or under {MIN_BOX_SIDE:g} px",
            )
    if not BOX_RE.search(reasoning):
        raise Rejected("box: none cited")
    score = answer_score(p.answer, record["answer"], record.get("task"))
    needed = MIN_REPORT_SCORE if answer_kind(record["answer"], record.get("task")) == "text" else 1.0
    same = normalize_answer(p.answer) == normalize_answer(
        record["answer"]
    )  # a copy (BLEU-4 < 1 under 4 words)
    if not same and score < needed:
        raise Rejected(
            "answer: disagrees with the ground truth",
            f"score {score:.2f} < {needed}: {p.answer[:120]!r} vs {record['answer'][:120]!r}",
        )
    return reasoning


def cited_boxes(reasoning: str) -> list[tuple[list[int], str]]:
    """(box, the sentence citing it) for every box in the reasoning."""
    return [
        ([int(v) for v in m.groups()], sentence)
        for sentence in SENTENCE_RE.split(reasoning)
        for m in BOX_RE.finditer(sentence)
    ]


def box_drawn_url(image: Image.Image, box: list[int], record: dict) -> str:
    """The image with the box outlined in red, as a PNG data URL (coordinates scaled if the file differs)."""
    img = image.convert("RGB")
    sx, sy = img.width / record["width"], img.height / record["height"]
    line = max(2, round(min(img.size) / 170))
    ImageDraw.Draw(img).rectangle(
        [box[0] * sx, box[1] * sy, box[2] * sx - 1, box[3] * sy - 1], outline=(255, 0, 0), width=line
    )
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def judge_reasoning(judge: ChatEndpoint, record: dict, image_path: Path, reasoning: str, templates) -> None:
    """Ask the judge about every cited box; any answer but yes rejects."""
    with Image.open(image_path) as image:
        image.load()
    for box, sentence in cited_boxes(reasoning):
        msgs = judge_messages(box_drawn_url(image, box, record), box, sentence, record, templates)
        reply = judge.complete(msgs, temperature=0.0, max_completion_tokens=8)
        verdict = strip_think(reply.text).strip().lower()
        word = re.match(r"\W*(\w+)", verdict)
        if word and word.group(1) == "yes":
            continue
        if word and word.group(1) == "no":
            raise Rejected("judge: box does not show the claim", f"{format_box(box)} in {sentence!r}")
        raise Rejected("judge: unclear verdict", f"{reply.text[:80]!r} for {format_box(box)}")


# ---------------------------------------------------------------- one record


@dataclass
class Outcome:
    id: str
    kept: dict | None = None
    rejected: tuple[str, str] | None = None
    failed: tuple[str, str] | None = None
    completion: str = ""


@dataclass
class Job:
    data_dir: Path
    out_dir: Path
    templates: Templates
    teacher_name: str
    teacher: ChatEndpoint | None = None  # None: the offline teacher
    judge: ChatEndpoint | None = None
    request_params: dict = field(default_factory=dict)
    image_detail: str = "high"
    offline_style: str = "per-question"
    offline_unboxed: dict = field(default_factory=dict)

    def teacher_request(self, record: dict) -> dict:
        urls = [image_data_url(p) for p in image_paths(self.data_dir, record)]
        messages = teacher_messages(record, urls, self.templates, self.image_detail)
        return {"model": self.teacher_name, "messages": messages, **self.request_params}

    def kept_record(self, record: dict, reasoning: str) -> dict:
        def relocate(image: str) -> str:
            if Path(image).is_absolute():
                return image
            return os.path.relpath((self.data_dir / image).resolve(), self.out_dir.resolve())

        meta = {**(record.get("meta") or {}), "teacher": self.teacher_name}
        if self.judge:
            meta["judge"] = self.judge.model
        return validate_record({**map_images(record, relocate), "reasoning": reasoning, "meta": meta})

    def process(self, record: dict) -> Outcome:
        out = Outcome(record["id"])
        try:
            paths = image_paths(self.data_dir, record)
        except ImagePathError as e:  # checked before anything is read, let alone sent
            out.rejected = (OUTSIDE, str(e))
            return out
        image_path = paths[0]  # the boxes' image, which the judge checks
        missing = [p for p in paths if not p.exists()]
        if missing:
            out.failed = ("image not found", str(missing[0]))
            return out
        try:
            if self.teacher is None:
                text, finish = offline_completion(record, self.offline_style, self.offline_unboxed), "stop"
            else:
                reply = self.teacher.complete(self.teacher_request(record)["messages"], **self.request_params)
                text, finish = reply.text, reply.finish_reason
            out.completion = text
            reasoning = check_completion(record, text, finish)
            if self.judge:
                judge_reasoning(self.judge, record, image_path, reasoning, self.templates)
            out.kept = self.kept_record(record, reasoning)
        except Rejected as r:
            out.rejected = (r.reason, r.detail)
        except RequestFailed as f:
            out.failed = (f.reason, f.detail)
        except OSError as e:  # an unreadable image file
            out.failed = ("image unreadable", f"{image_path}: {e}")
        return out


# ---------------------------------------------------------------- files


def repair_tail(path: Path) -> None:
    """Drop a half-written last line (a run killed mid-write); its record is simply redone."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        os.truncate(path, data.rfind(b"\n") + 1)


def ids_in(path: Path) -> set[str]:
    return {row["id"] for _, row in iter_jsonl(path)} if path.exists() else set()


def append_line(f, row: dict) -> None:
    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


def copy_frame(data_dir: Path, out_dir: Path) -> None:
    """OUT's frame.json: the source's, plus the source folder (and its own roots) as image roots, since
    kept records point at the source's images (data_prep.io.resolve_image reads them from here)."""
    src, dst = read_frame(data_dir), read_frame(out_dir)
    if src is not None and dst is not None and frame_rule(dst) != frame_rule(src):
        raise ColdstartError(
            f"{out_dir}/frame.json ({dst}) differs from {data_dir}/frame.json ({src}): the boxes of "
            "the two would not share a frame. Use another --out."
        )
    roots = [*(dst or {}).get(IMAGE_ROOTS, []), *map(str, image_roots(data_dir, env=False))]
    frame = {**(src if src is not None else dst or {}), IMAGE_ROOTS: list(dict.fromkeys(roots))}
    atomic_write_text(out_dir / "frame.json", json.dumps(frame, indent=2) + "\n")


def write_dataset(out_dir: Path, order: list[str]) -> int:
    """OUT/records.jsonl: every kept record, in the source order, atomically."""
    rows = (
        {row["id"]: row for _, row in iter_jsonl(out_dir / KEPT_FILE)}
        if (out_dir / KEPT_FILE).exists()
        else {}
    )
    rank = {rid: i for i, rid in enumerate(order)}
    ordered = sorted(rows.values(), key=lambda r: rank.get(r["id"], len(rank)))
    return write_jsonl(out_dir / RECORDS, ordered)


# ---------------------------------------------------------------- guard, dry run


def check_data_use(records: list[dict], endpoints: list[tuple[str, str]], allow_remote: bool) -> None:
    """Refuse to send credentialed records to an endpoint that is not on this machine."""
    creds = Counter(r["source"] for r in records if is_credentialed(r["source"]))
    if not creds:
        return
    for role, url in endpoints:
        if is_local_url(url):
            continue
        if not allow_remote:
            sources = ", ".join(f"{s}: {n}" for s, n in creds.most_common())
            raise ColdstartError(
                DATA_USE_REFUSAL.format(n=sum(creds.values()), sources=sources, role=role, url=url)
            )
        log.warning(
            "WARNING: sending %d credentialed record(s) to the remote %s endpoint %s (--allow_remote_credentialed: "
            "you confirmed zero retention, no training use, no human review).",
            sum(creds.values()),
            role,
            url,
        )


def truncate_images(obj):
    """The request with every base64 image cut short, for printing."""
    if isinstance(obj, dict):
        return {k: truncate_images(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [truncate_images(v) for v in obj]
    if isinstance(obj, str) and obj.startswith("data:") and ";base64," in obj and len(obj) > 80:
        return f"{obj[:60]}...[{len(obj) - 60} more base64 characters]"
    return obj


# ---------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m data_prep.synthesis.coldstart",
        description="Synthesise grounded cold-start reasoning with a teacher model, filtered.",
    )
    add_data_args(p)
    add_teacher_args(p)
    add_request_args(p)
    add_judge_args(p)
    p.add_argument(
        "--allow_remote_credentialed",
        action="store_true",
        help="I confirm the remote endpoint keeps no data, trains on none and has no human review",
    )
    p.add_argument("--dry_run", action="store_true", help="print one request and send nothing")
    args = p.parse_args(argv)
    if args.teacher == "openai" and not (args.base_url and args.model):
        p.error("--teacher openai needs --base_url and --model")
    if bool(args.judge_base_url) != bool(args.judge_model):
        p.error("--judge_base_url and --judge_model go together")
    if args.offline_unboxed and (args.teacher != "offline" or args.offline_style != "survey"):
        p.error("--offline_unboxed applies to the offline teacher's survey style (--offline_style survey)")
    if args.api_key_env is None:
        args.api_key_env = "AZURE_OPENAI_API_KEY" if args.azure_api_version else "OPENAI_API_KEY"
    args.judge_api_key_env = args.judge_api_key_env or args.api_key_env
    return args


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset folder (records.jsonl)")
    p.add_argument("--split", default="train", help="default: %(default)s")
    p.add_argument("--limit", type=int, default=None, help="first N records of the split")
    p.add_argument("--out", required=True, help="output dataset folder (created; reruns resume)")
    p.add_argument("--templates", default=str(TEMPLATE_DIR), help="folder of the prompt templates")


def add_teacher_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--teacher",
        choices=("openai", "offline"),
        default="openai",
        help="offline: no API, phantom-style records (default: %(default)s)",
    )
    p.add_argument(
        "--offline_style",
        choices=STYLES,
        default="per-question",
        help="offline teacher: 'survey' reads the whole study first (phantom records), then answers; "
        "'per-question' cites only the question's boxes (default: %(default)s)",
    )
    p.add_argument(
        "--offline_unboxed",
        type=parse_unboxed,
        default={},
        metavar="NAME=RATE,...",
        help="survey style: name these findings without their box at RATE per study unless asked about, "
        "as a teacher that localises only what it was asked (the demo: 'cardiomegaly=0.67,pleural "
        "effusion=0.67'); answers and the records' boxes stay exact",
    )
    p.add_argument("--base_url", help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1")
    p.add_argument("--model", help="teacher model (Azure: the deployment name)")
    p.add_argument(
        "--api_key_env",
        default=None,
        help="env var holding the key (OPENAI_API_KEY; Azure: AZURE_OPENAI_API_KEY)",
    )
    p.add_argument("--azure_api_version", default=None, help="use Azure OpenAI with this api-version")
    p.add_argument(
        "--price_in",
        type=float,
        default=None,
        help=f"USD per 1M prompt tokens (default {DEFAULT_PRICE_IN}, local 0)",
    )
    p.add_argument(
        "--price_out",
        type=float,
        default=None,
        help=f"USD per 1M completion tokens (default {DEFAULT_PRICE_OUT}, local 0)",
    )


def add_request_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.7, help="default: %(default)s")
    p.add_argument(
        "--max_tokens",
        type=int,
        default=1024,
        help="completion token limit per request (default: %(default)s)",
    )
    p.add_argument(
        "--image_detail",
        choices=("low", "high", "auto"),
        default="high",
        help="OpenAI image detail (default: %(default)s)",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default: %(default)s)")
    p.add_argument(
        "--max_retries",
        type=int,
        default=5,
        help="per request: the openai client's retries (backoff, Retry-After), malformed replies included "
        "(default: %(default)s)",
    )


def add_judge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--judge_base_url", default=None, help="second endpoint that checks each cited box")
    p.add_argument("--judge_model", default=None)
    p.add_argument("--judge_api_key_env", default=None, help="default: the teacher's")
    p.add_argument("--judge_price_in", type=float, default=None)
    p.add_argument("--judge_price_out", type=float, default=None)


def price(given: float | None, default: float, url: str | None) -> float:
    if given is not None:
        return given
    return 0.0 if url is None or is_local_url(url) else default


@contextmanager
def exclusive(out_dir: Path):
    """Hold OUT for this run: a second run on the same folder would write duplicates."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / LOCK_FILE, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ColdstartError(
                f"Another coldstart run is writing to {out_dir}; wait for it or use another --out."
            ) from None
        yield


class Results:
    """Appends each outcome to OUT as it arrives (kept / rejected) and counts it in the ledger;
    ``on_add`` (run: rewrite ledger.json) follows every outcome, so a killed run leaves one that adds up."""

    def __init__(self, out_dir: Path, ledger: Ledger, on_add=None):
        self.ledger = ledger
        self.failed: Counter[str] = Counter()
        self.failed_ids: list[str] = []
        self.on_add = on_add
        self.kept_f = open(out_dir / KEPT_FILE, "a", encoding="utf-8")
        self.rejects_f = open(out_dir / REJECTS_FILE, "a", encoding="utf-8")

    def add(self, out: Outcome) -> None:
        if out.kept:
            append_line(self.kept_f, out.kept)
            self.ledger.written += 1
        elif out.rejected:
            reason, detail = out.rejected
            append_line(
                self.rejects_f,
                {"id": out.id, "reason": reason, "detail": detail, "completion": out.completion},
            )
            self.ledger.reject(reason, where=out.id, detail=detail)
        else:
            self.failed[out.failed[0]] += 1
            self.failed_ids.append(out.id)
        if self.on_add:
            self.on_add()

    def counts(self) -> dict:
        return {
            "kept": self.ledger.written,
            "rejected": sum(self.ledger.rejected.values()),
            "failed": self.failed.total(),
        }

    def close(self) -> None:
        self.kept_f.close()
        self.rejects_f.close()


def drive(
    job: Job, pending: list[dict], concurrency: int, stop: threading.Event, results: Results
) -> str | None:
    """Process the records on ``concurrency`` threads (a bounded window), writing as they finish.

    Returns why the run stopped early (an endpoint refusing the key, an unexpected error, Ctrl-C), or
    None.
    """
    todo, inflight, stopped = iter(pending), {}, None
    with (
        ThreadPoolExecutor(max_workers=concurrency) as pool,
        tqdm(total=len(pending), desc="coldstart", unit="rec", disable=None) as bar,
    ):

        def submit_next() -> None:
            rec = next(todo, None)
            if rec is not None and not stop.is_set():
                inflight[pool.submit(job.process, rec)] = rec

        for _ in range(2 * concurrency):
            submit_next()
        try:
            while inflight:
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in done:
                    rec = inflight.pop(fut)
                    try:
                        out = fut.result()
                    except EndpointStop as e:
                        stopped = stopped or str(e)
                        continue
                    except Exception as e:  # noqa: BLE001 - a bug or an unforeseen input: stop before more is spent
                        log.exception("coldstart: unexpected error on record %s", rec["id"])
                        stop.set()
                        stopped = stopped or f"unexpected {type(e).__name__} on record {rec['id']!r}: {e}"
                        out = Outcome(
                            rec["id"], failed=(f"unexpected error ({type(e).__name__})", str(e)[:300])
                        )
                    results.add(out)
                    bar.update(1)
                    bar.set_postfix(results.counts())
                    submit_next()
        except KeyboardInterrupt:
            stop.set()
            stopped = "interrupted (Ctrl-C)"
            for fut in inflight:
                fut.cancel()
    return stopped


def endpoint(args, role: str, stop: threading.Event) -> ChatEndpoint:
    judge = role == "judge"
    return ChatEndpoint(
        role=role,
        base_url=args.judge_base_url if judge else args.base_url,
        model=args.judge_model if judge else args.model,
        api_key_env=args.judge_api_key_env if judge else args.api_key_env,
        azure_api_version=None if judge else args.azure_api_version,
        timeout=args.timeout,
        max_retries=args.max_retries,
        stop=stop,
    )


def dry_run(job: Job, pending: list[dict], out_dir: Path, base_url: str | None) -> str:
    """What a run would send to ``base_url`` for the first pending record (None: the offline teacher,
    what it would write)."""
    if not pending:
        return f"Nothing to send: every selected record is already kept or rejected in {out_dir}."
    if base_url is None:  # the offline teacher
        completion = offline_completion(pending[0], job.offline_style, job.offline_unboxed)
        return json.dumps({"teacher": "offline", "completion": completion}, indent=2)
    try:
        request = {"base_url": base_url, **truncate_images(job.teacher_request(pending[0]))}
    except ImagePathError as e:  # a run rejects it unread; the dry run says so instead of a traceback
        log.info("(dry run: nothing sent; the first record would be rejected: %s)", e)
        return ""
    log.info("(dry run: nothing sent; %d record(s) would be sent)", len(pending))
    return json.dumps(request, indent=2, ensure_ascii=False)


def usage_and_cost(args, job: Job) -> dict:
    """Per-endpoint request/retry/token counts with their prices, and the estimated cost in USD."""
    out, cost = {}, 0.0
    for role, ep, p_in, p_out, url in (
        ("teacher", job.teacher, args.price_in, args.price_out, args.base_url),
        ("judge", job.judge, args.judge_price_in, args.judge_price_out, args.judge_base_url),
    ):
        if ep is None:
            continue
        p_in, p_out = price(p_in, DEFAULT_PRICE_IN, url), price(p_out, DEFAULT_PRICE_OUT, url)
        stats = ep.usage()  # a snapshot: the ledger is written while requests run
        cost += (stats.get("prompt_tokens", 0) * p_in + stats.get("completion_tokens", 0) * p_out) / 1e6
        out[f"{role}_usage"] = {
            **dict(sorted(stats.items())),
            "price_in_per_1m": p_in,
            "price_out_per_1m": p_out,
        }
    out["estimated_cost_usd"] = round(cost, 4)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    with user_errors("coldstart", OpenMedixError, FileNotFoundError):
        records, data_dir, out_dir = select_records(args)
        with exclusive(out_dir):
            job, pending, before = prepare(args, records, data_dir, out_dir)
            if args.dry_run:
                base_url = args.base_url if args.teacher == "openai" else None
                if text := dry_run(job, pending, out_dir, base_url):
                    print(text)  # the command's result: the request, or the offline completion
                return 0
            return run(args, job, records, pending, before)


def select_records(args) -> tuple[list[dict], Path, Path]:
    """(the selected records, the dataset folder, OUT), checked: OUT is not the data's folder, every
    line reads, and ids are unique (a rerun resumes by id)."""
    data = Path(args.data)
    data_dir = data if data.is_dir() else data.parent
    out_dir = Path(args.out)
    if out_dir.resolve() == data_dir.resolve():
        raise ColdstartError(
            "--out must differ from the --data folder (its records.jsonl would be replaced)."
        )
    try:
        records = read_records(data, args.split)[: args.limit]
    except RecordError as e:  # a line that is not UTF-8 or JSON, an invalid record: file:line
        raise ColdstartError(
            f"{e}\nFix or remove that line of {data}, then run the same command again."
        ) from None
    dupes = [rid for rid, n in Counter(r["id"] for r in records).items() if n > 1]
    if dupes:
        raise ColdstartError(
            f"{data}: duplicate record ids {dupes[:5]}; ids must be unique to resume safely."
        )
    return records, data_dir, out_dir


def prepare(args, records: list[dict], data_dir: Path, out_dir: Path) -> tuple[Job, list[dict], dict]:
    """The job, the records still to do (those neither kept nor rejected in OUT, checked against the
    data-use rule) and how many of the selected ones were {"already_kept", "already_rejected"}."""
    for path in (out_dir / KEPT_FILE, out_dir / REJECTS_FILE):
        repair_tail(path)
    kept_before, rejected_before = ids_in(out_dir / KEPT_FILE), ids_in(out_dir / REJECTS_FILE)
    pending = [r for r in records if r["id"] not in kept_before | rejected_before]
    endpoints = [("teacher", args.base_url)] if args.teacher == "openai" else []
    if args.judge_base_url:
        endpoints.append(("judge", args.judge_base_url))
    check_data_use(pending, endpoints, args.allow_remote_credentialed)
    job = Job(
        data_dir=data_dir,
        out_dir=out_dir,
        templates=Templates.load(Path(args.templates)),
        teacher_name=args.model if args.teacher == "openai" else "offline",
        offline_style=args.offline_style,
        offline_unboxed=args.offline_unboxed,
        request_params={"temperature": args.temperature, "max_completion_tokens": args.max_tokens},
        image_detail=args.image_detail,
    )
    before = {
        "already_kept": sum(r["id"] in kept_before for r in records),
        "already_rejected": sum(r["id"] in rejected_before for r in records),
    }
    return job, pending, before


@dataclass
class LedgerFile:
    """OUT/ledger.json, rewritten after every record: what a killed run leaves adds up too."""

    args: argparse.Namespace
    job: Job
    ledger: Ledger
    out_dir: Path
    n_pending: int
    before: dict
    start: float = field(default_factory=time.time)

    def save(self, results: Results, stopped: str | None = None) -> None:
        done, job = results.counts(), self.job
        offline = {"offline_style": job.offline_style, "offline_unboxed": job.offline_unboxed}
        self.ledger.extra.update(
            {
                "teacher": job.teacher_name,
                **(offline if not job.teacher else {}),
                "base_url": self.args.base_url if job.teacher else None,
                "judge": self.args.judge_model,
                **self.before,
                "failed": done["failed"],
                "failed_by_reason": dict(results.failed),
                "failed_ids": list(results.failed_ids),
                "unfinished": self.n_pending - sum(done.values()),
                "seconds": round(time.time() - self.start, 1),
                **usage_and_cost(self.args, job),
            }
        )
        self.ledger.extra.pop("stopped", None)
        if stopped:
            self.ledger.extra["stopped"] = stopped
        atomic_write_text(self.out_dir / LEDGER_FILE, json.dumps(self.ledger.as_dict(), indent=2) + "\n")


RUNNING = "unfinished: written while the run went on (killed, if no run holds OUT now)"


def run(args, job: Job, records: list[dict], pending: list[dict], before: dict) -> int:
    """Send the pending records, write OUT as they finish; 1 when some failed (a rerun retries them).
    Raises RunStopped when the run stopped early."""
    stop = threading.Event()
    job.teacher = endpoint(args, "teacher", stop) if args.teacher == "openai" else None
    job.judge = endpoint(args, "judge", stop) if args.judge_base_url else None
    ledger = Ledger("coldstart")
    ledger.read = len(records)
    ledger_file = LedgerFile(args, job, ledger, job.out_dir, len(pending), before)
    results = Results(job.out_dir, ledger, on_add=lambda: ledger_file.save(results, RUNNING))
    stopped = None
    try:
        stopped = drive(job, pending, max(1, args.concurrency), stop, results)
    except BaseException as e:  # a crash: still leave the kept records and a ledger that adds up
        stopped = f"crashed: {type(e).__name__}: {e}"
        raise
    finally:
        results.close()
        kept_total = write_dataset(job.out_dir, [r["id"] for r in records])
        copy_frame(job.data_dir, job.out_dir)
        ledger.extra["kept_total_in_out"] = kept_total
        ledger_file.save(results, stopped)
    log.info("%s", ledger.summary())
    log.info("    output: %s (%d kept records)", job.out_dir / RECORDS, kept_total)
    if stopped:
        raise RunStopped(f"Stopped: {stopped}")
    if failed := results.counts()["failed"]:
        log.warning("%d record(s) failed (not rejected): run the same command again to retry them.", failed)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
