"""The offline teacher: short grounded reasoning built from what a record already knows.

For the phantom data (and any record with ground-truth boxes) no API is needed: each
ground-truth box of the question gets one sentence that cites it; a question without boxes
(a negative answer) cites the anatomy it is about ("The heart [..] is normal in size.").
Sentences are drawn from a few templates, chosen deterministically from the record id, so a
rerun writes the same text. Kept short on purpose (1-3 sentences, one box each): a tiny model
must learn the pattern in minutes on a CPU. The output goes through the same filters as a
real teacher's.

Phantom records carry ``meta["findings"]`` ([{"name", "side", "zone", "label", "box"}, ...])
and ``meta["anatomy"]`` ({"heart": box, "right_lung": box, "left_lung": box}).
"""

from __future__ import annotations

import hashlib
import random

from data_prep.prompts import reasoning_text
from rewards.parsing import format_box

MAX_SENTENCES = 3

FINDING_PLACED = (
    "{NP} is seen in the {where} {box}.",
    "The {where} shows {np} {box}.",
    "There is {np} in the {where} {box}.",
    "{Name} in the {where} {box}.",
)
FINDING_UNPLACED = (
    "{NP} is seen at {box}.",
    "There is {np} {box}.",
    "{Name} is visible {box}.",
)
MASS_NOUNS = ("consolidation", "cardiomegaly", "atelectasis", "edema", "fibrosis", "emphysema")
ENLARGED_HEART = (
    "The heart {box} is enlarged.",
    "The cardiac silhouette {box} is enlarged.",
    "Heart size {box} is increased.",
)
NORMAL = {
    "heart": (
        "The heart {box} is normal in size.",
        "The cardiac silhouette {box} is not enlarged.",
        "Heart size {box} is normal.",
    ),
    "lung": (
        "The {side} lung {box} is clear.",
        "No focal opacity in the {side} lung {box}.",
        "The {side} lung {box} looks normal.",
    ),
}
HEART_WORDS = ("heart", "cardi", "mediastin")
GENERAL_TASKS = ("report_findings", "report_impression", "classification")


def _rng(record_id: str) -> random.Random:
    return random.Random(int(hashlib.sha256(record_id.encode()).hexdigest()[:16], 16))


def _noun_phrase(name: str) -> str:
    """ "a nodule", "an effusion", "consolidation" (mass nouns take no article)."""
    if name in MASS_NOUNS:
        return name
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def _finding_for(box: dict, findings: list[dict]) -> dict | None:
    """The phantom finding behind a ground-truth box: same box, else same label or name."""
    for key in ("box", "label", "name"):
        value = box["box"] if key == "box" else box["label"]
        for f in findings:
            if f.get(key) is not None and (f[key] == value or str(f[key]).lower() == str(value).lower()):
                return f
    return None


def finding_sentence(rng: random.Random, gt: dict, finding: dict | None, anatomy: dict) -> str:
    box = format_box(gt["box"])
    name = str((finding or {}).get("name") or gt["label"]).replace("_", " ").strip()
    if "cardiomegaly" in name.lower() or (anatomy.get("heart") and list(gt["box"]) == list(anatomy["heart"])):
        return rng.choice(ENLARGED_HEART).format(box=box)
    side, zone = (finding or {}).get("side"), (finding or {}).get("zone")
    where = " ".join(str(w) for w in (side, zone) if w)
    if where:
        where = f"{where} zone" if zone else f"{where} lung"
    name = name.lower()
    np_ = _noun_phrase(name)
    values = {"np": np_, "NP": np_[:1].upper() + np_[1:], "Name": name[:1].upper() + name[1:]}
    templates = FINDING_PLACED if where else FINDING_UNPLACED
    return rng.choice(templates).format(box=box, where=where, **values)


def relevant_anatomy(record: dict, anatomy: dict) -> list[str]:
    """The parts a negative answer cites: those the question names (heart, a side), else the lungs;
    a whole-study question (report, classification, "what abnormalities") cites heart and lungs."""
    q = record["question"].lower()
    whole = (
        record["task"] in GENERAL_TASKS or (record.get("meta") or {}).get("question_type") == "abnormality"
    )
    parts = ["heart"] if whole or any(w in q for w in HEART_WORDS) else []
    sides = [s for s in ("right", "left") if s in q]
    if whole or sides or not parts:
        parts += [f"{s}_lung" for s in (sides or ["right", "left"])]
    return [p for p in parts if anatomy.get(p)]


def offline_reasoning(record: dict) -> str:
    """1-3 sentences, each citing one box: the question's ground-truth boxes, else its anatomy."""
    rng = _rng(record["id"])
    meta = record.get("meta") or {}
    findings, anatomy = meta.get("findings") or [], meta.get("anatomy") or {}
    sentences = [finding_sentence(rng, gt, _finding_for(gt, findings), anatomy) for gt in record["boxes"]]
    if not sentences:
        for part in relevant_anatomy(record, anatomy):
            kind, side = ("heart", "") if part == "heart" else ("lung", part.split("_")[0])
            sentences.append(rng.choice(NORMAL[kind]).format(box=format_box(anatomy[part]), side=side))
    return " ".join(sentences[:MAX_SENTENCES])


ASKED_TYPES = ("presence", "location", "grounding")  # questions about one named finding


def _title(label: str) -> str:
    """ "left pleural effusion" -> "Left Pleural Effusion"."""
    return " ".join(w.capitalize() for w in label.split())


def survey_reasoning(record: dict, unboxed: dict[str, float] | None = None) -> str:
    """A read of the whole study, the same for every question about it, with the asked finding marked.

    The read names every finding of the study in title case with its box, in a fixed order
    ("Cardiomegaly [..]. Left Pleural Effusion [..]."), or the normal heart with its box and "Clear
    lungs.". A question about one finding (presence, location, grounding) first restates it, then
    marks it in the read, and a presence question ends with whether it was seen:
    "Asked: pleural effusion. Cardiomegaly [..]. Left Pleural Effusion (asked) [..]. So: seen."

    Why this shape (each step measured on the demo's tiny model, see the README's demo section):
    reading the image becomes one skill that every task trains; the restatement is a copy the model
    learns reliably when the question is the only place the name occurs; the read's title-case
    names are tokens of their own, so marking "(asked)" is a match of the name just written
    against the restated one, and the yes/no only has to notice a mark. With the decision made
    before the name ("So pneumothorax." / "No pneumothorax."), the tiny model stayed near chance.

    ``unboxed`` ({finding name: rate}) makes the teacher name such a finding without its box, at that
    rate per study, unless the question asks about it: the habit of a teacher that localises what it
    was asked and only mentions the rest (an LLM writes "cardiomegaly" or "a left effusion" without
    coordinates). The demo uses it so the cold start leaves boxes undone that GRPO's grounding and
    coordinate terms pay for (docs/demo-notes.md). Answers and the records' boxes stay exact.
    """
    meta = record.get("meta") or {}
    findings, anatomy = meta.get("findings") or [], meta.get("anatomy") or {}
    qtype = meta.get("question_type")
    target = meta.get("target") if qtype in ASKED_TYPES else None

    def cite(f) -> str:
        rate = (unboxed or {}).get(f["name"], 0.0) if f["name"] != target else 0.0
        if rate and _rng(f"{record.get('study_id') or record['id']}|{f['name']}").random() < rate:
            return ""  # the same for every question about the study
        return f" {format_box(f['box'])}"

    if findings:
        read = [
            f"{_title(f['label'])}{' (asked)' if target and f['name'] == target else ''}{cite(f)}."
            for f in findings
        ]
    else:
        read = [f"Normal heart {format_box(anatomy['heart'])}."] if anatomy.get("heart") else []
        read.append("Clear lungs.")
    if not target:
        return " ".join(read)
    parts = [f"Asked: {target}.", *read]
    if qtype == "presence":
        parts.append("So: seen." if any(f["name"] == target for f in findings) else "So: not seen.")
    return " ".join(parts)


STYLES = ("survey", "per-question")


def parse_unboxed(spec: str) -> dict[str, float]:
    """ "cardiomegaly=0.67,pleural effusion=0.67" -> {"cardiomegaly": 0.67, "pleural effusion": 0.67}."""
    out = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, rate = item.rpartition("=")
        try:
            value = float(rate)
        except ValueError:
            value = -1.0
        if not sep or not name.strip() or not 0.0 <= value <= 1.0:
            raise ValueError(f"--offline_unboxed: '{item}' is not NAME=RATE with a rate in [0, 1]")
        out[name.strip().lower()] = value
    return out


def offline_completion(
    record: dict, style: str = "per-question", unboxed: dict[str, float] | None = None
) -> str:
    """The full completion in the paper's format, as a real teacher would reply.

    ``survey`` applies to records that list their findings (``meta["findings"]``, the phantom set);
    others fall back to the per-question style. ``unboxed``: see ``survey_reasoning``.
    """
    if style not in STYLES:
        raise ValueError(f"unknown offline teacher style '{style}' (expected one of {', '.join(STYLES)})")
    meta = record.get("meta") or {}
    if style == "survey" and "findings" in meta and "anatomy" in meta:  # a phantom-style record
        return reasoning_text(survey_reasoning(record, unboxed), record["answer"])
    return reasoning_text(offline_reasoning(record), record["answer"])
