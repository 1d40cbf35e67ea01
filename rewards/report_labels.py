"""A rule-based, negation-aware labeler of the 14 CheXpert observations in radiology report text,
and the label agreement of two reports (CheXbert-F1 style), for a clinical report reward and metric.

In the spirit of the Stanford CheXpert labeler (mention -> negation / uncertainty -> aggregation),
with NegBio's dependency parse replaced by clause-scoped cues, so that it is small, readable and
fast (one precompiled regex pass per report; no model, no I/O).

``label_report(text) -> {observation: 1 | 0 | -1 | None}``
    1 positive, 0 negative, -1 uncertain, None not mentioned, for the 14 ``CHEXPERT_OBSERVATIONS``
    (also ``data_prep.labels.CHEXPERT_LABELS``: the order of the CheXpert label files' columns).

How a report is read
    1. Lowercase, whitespace collapsed; a blank line ends a sentence, a single line break does not
       (reports wrap lines mid-sentence).
    2. One regex pass cuts the text into tokens: mentions of an observation (``MENTIONS``, open noun
       phrases such as "pleural effusion"), closed statements (``STATEMENTS``, a whole predicate such
       as "the heart is enlarged"), normal statements (``NORMAL``, which set observations to 0, e.g.
       "heart size is normal"), look-alikes that are no mention (``BLOCKERS``: "pericardial
       effusion" is not a pleural effusion, "soft tissue edema" is not pulmonary edema), negation
       and uncertainty cues, scope ends and clause breaks, tried only where a word starts. Where
       several match at one position the first kind wins, in the order normal statements, closed
       statements, pseudo-negations, uncertainty cues, scope ends and breaks, negation cues,
       blockers, mentions (cues in their written order, the others longest pattern first): so
       "cannot be excluded" is uncertainty, not the negation "not".
    3. Clauses end at ``. ; : ! ?`` (not a decimal point), a blank line, and at "but", "however",
       "although", "though", "except", "whereas", "apart from", "aside from", and "and" before a new
       subject ("and the", "and there", "and a", "and no", ...).
    4. Scope, inside one clause: a pre-cue ("no", "without", "negative for", "free of", "possible",
       "cannot exclude", ...) governs the open mentions after it until a scope end ("is seen", "is
       present", "are noted", ...), a post-cue, a pseudo-negation ("no change in", "no interval
       change"), a normal or a closed statement; the next pre-cue takes over from it. A post-cue
       ("is not seen", "has resolved", "is absent", "cannot be excluded", ...) governs the open
       mentions before it back to a pre-cue, a scope end, a pseudo-negation, a normal or a closed
       statement. So "no pneumothorax or pleural effusion" and "effusion and pneumothorax have
       resolved" cover both mentions, while "No pneumothorax. Small left pleural effusion." and "No
       pneumothorax, but there is a small right effusion." keep the effusion positive. "versus" /
       "vs" makes the mentions on both sides uncertain. A closed statement takes only an uncertainty
       pre-cue ("possibly the heart is enlarged"); its own verb says what is asserted.
    5. A mention is uncertain when an uncertainty cue governs it, else negative when a negation cue
       governs it, else positive.
    6. Per observation, over all its mentions, CheXpert's aggregation: any positive -> 1, else any
       uncertain -> -1, else negative -> 0 (stages/aggregate.py of the CheXpert labeler).

Choices, where CheXpert leaves room or where we differ
    * "likely", "probably", "unlikely", "suspected", "suggestive of", "concerning for", "may",
      "could", "no new" (as CheXpert) are uncertainty: they do not assert the finding.
    * "The lungs are clear" (also "lungs are well expanded and clear", "clear lungs") sets Lung
      Opacity, Consolidation, Edema and Pneumonia to 0 (the airspace findings clear lungs exclude);
      not Atelectasis, Lung Lesion, Pneumothorax or Pleural Effusion. "Lungs are clear of X" is the
      negation cue "clear of" instead.
    * "heart size is normal" / "cardiac silhouette is within normal limits" / "heart is not
      enlarged" -> Cardiomegaly 0; "cardiomediastinal silhouette (contours) normal" -> Cardiomegaly 0
      and Enlarged Cardiomediastinum 0; "mediastinal contours are normal" -> Enlarged
      Cardiomediastinum 0; "costophrenic angles are sharp" -> Pleural Effusion 0; "osseous structures
      are unremarkable" / "no acute osseous abnormality" -> Fracture 0.
    * Support Devices needs a device word ("tube", "catheter", "pacemaker", "device", "picc",
      "central line", ...): a bare "line" is not one ("pleural line", "Kerley B lines").
    * CheXpert's extra rule that "chf" / "heart failure" also makes Cardiomegaly uncertain is not
      applied (they are Edema mentions here).
    * No Finding: 1 when no observation other than Support Devices is positive or uncertain (the
      CheXpert rule), else None (CheXpert leaves it blank; never 0). A text with no letters at all
      (empty, whitespace) gets None everywhere, No Finding included, so an empty generation does not
      "agree" with a normal report.

Scores
    ``positive_labels(labels, uncertain)`` - the observations counted as positive; ``uncertain``:
    "positive" (CheXbert F1 as the report-generation papers and f1chexbert's default compute it),
    "negative", or "ignore" (where either side is uncertain the observation is left out).

    ``label_agreement(hyp, ref, observations=CHEXPERT_OBSERVATIONS, uncertain="positive")`` in
    [0, 1]: F1 of the positive labels of one pair (micro over the observations: 2|H & R| / (|H| +
    |R|)); No Finding is one of the 14, so two normal reports agree (1.0). Both sides with no
    positive label -> 1.0 (they agree; possible with ``observations`` that leave out No Finding, with
    "ignore", or for two texts without letters). This is the per-sample reward form.

    ``label_f1(hyps, refs, uncertain="positive")`` - corpus metrics: micro and macro F1 over the 14
    and over the 5 (Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion), named as
    the paper names CheXbert's (``micro_f1_14`` ...). An observation
    with no positive on either side has F1 0 in the macro mean and an empty corpus has micro F1 0,
    as sklearn's ``classification_report`` (which f1chexbert uses) reports them; the per-pair
    ``label_agreement`` scores "both empty" 1.0 instead - the reward's reading and the metric's,
    side by side on purpose.

Throughput: 6,000-8,000 phantom reports (~170 characters) per second on one busy CPU core, uncached;
``label_report`` keeps an LRU cache, so a reference labeled once per GRPO group costs nothing after.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

CHEXPERT_OBSERVATIONS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"
CHEXBERT_5 = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
UNCERTAIN_POLICIES = ("positive", "negative", "ignore")

# ---------------------------------------------------------------------------------------------
# Vocabulary. Patterns are regex fragments over lowercased text with single spaces; each is wrapped
# in word boundaries when compiled.
# ---------------------------------------------------------------------------------------------

_SIZE = r"(?:(?:right|left|bilateral|both|small|large|trace|tiny|minimal|moderate|lateral|posterior) )*"
_ADV = r"(?:(?:mildly|moderately|markedly|severely|slightly|minimally|significantly|again|still|now) )?"
_VERB = r"(?:is|are|appears|appear|remains|remain|seems)"
_HEART = r"(?:heart(?: size)?|cardiac (?:silhouette|size|shadow|contours?))"
_CARDIOMED = r"cardiomediastinal (?:silhouettes?|contours?|shadow|size)"
_MEDIAST = (
    r"(?:mediastinum|mediastinal (?:silhouettes?|contours?|width)|(?:hilar|hila) and mediastinal contours?)"
)
_NORMAL = r"(?:normal in size|normal|within normal limits|not enlarged|unremarkable)"
_NORMAL_M = r"(?:normal in size|normal|within normal limits|not enlarged|not widened|unremarkable)"

MENTIONS: dict[str, tuple[str, ...]] = {
    "Atelectasis": (r"atelecta(?:sis|ses|tic)", r"(?:lobar |segmental |lobe )?collapse", r"volume loss"),
    "Cardiomegaly": (
        r"cardiomegaly",
        r"enlarged (?:heart|cardiac (?:silhouette|contour|shadow|size))",
        r"cardiac enlargement",
        r"enlargement of the (?:heart|cardiac silhouette)",
        r"increased cardiothoracic ratio",
    ),
    "Consolidation": (r"consolidations?", r"consolidative"),
    "Edema": (
        r"edema",
        r"(?:pulmonary )?vascular congestion",
        r"pulmonary congestion",
        r"(?:congestive )?heart failure",
        r"chf",
        r"fluid overload",
    ),
    "Enlarged Cardiomediastinum": (
        r"enlarged cardiomediastin(?:um|al (?:silhouette|contours?))",
        r"enlarged mediastinum",
        r"widened (?:superior )?mediastin(?:um|al (?:silhouette|contours?))",
        r"widening of the (?:superior )?mediastinum",
        r"mediastinal (?:widening|enlargement)",
    ),
    "Fracture": (r"fractures?", r"fractured"),
    "Lung Lesion": (r"nodules?", r"masse?s?", r"lesions?", r"tumou?rs?", r"neoplasms?"),
    "Lung Opacity": (
        r"opacit(?:y|ies)",
        r"opacification",
        r"opacified",
        r"infiltrat(?:e|es|ion|ive)",
        r"air[- ]?space (?:disease|process)",
        r"ground[- ]glass",
        r"increased density",
        r"interstitial (?:markings?|pattern)",
        r"reticular (?:markings?|pattern)",
        r"haziness",
    ),
    "Pleural Effusion": (
        r"(?:pleural )?effusions?",
        r"pleural fluid",
        r"fluid in the pleural spaces?",
        r"hydrothorax",
        r"blunting (?:of )?the " + _SIZE + r"costophrenic (?:angles?|sulcus|sulci)",
        r"blunted " + _SIZE + r"costophrenic (?:angles?|sulcus|sulci)",
    ),
    "Pleural Other": (
        r"pleural (?:thickening|scarring|plaques?|calcifications?)",
        r"pleural[- ]parenchymal scarring",
        r"fibrothorax",
    ),
    "Pneumonia": (r"(?:broncho)?pneumonias?", r"infections?", r"infectious(?: process)?"),
    "Pneumothorax": (r"(?:hydro)?pneumothora(?:x|ces)", r"ptx"),
    "Support Devices": (
        r"tubes?",
        r"catheters?",
        r"pacemakers?",
        r"pacers?",
        r"a?icds?",
        r"defibrillators?",
        r"devices?",
        r"stents?",
        r"drains?",
        r"picc(?: lines?)?",
        r"(?:central|venous|arterial|jugular|subclavian|dialysis|enteric|swan[- ]ganz|ij) (?:venous )?lines?",
        r"port[- ]a[- ]cath",
        r"mediport",
        r"hardware",
        r"(?:sternotomy|sternal) wires",
    ),
}

# Closed statements: the predicate is part of the phrase (post-cues after it speak of something else).
STATEMENTS: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": (rf"{_HEART} {_VERB} {_ADV}enlarged",),
    "Enlarged Cardiomediastinum": (rf"(?:{_CARDIOMED}|{_MEDIAST}) {_VERB} {_ADV}(?:enlarged|widened)",),
    "Pleural Effusion": (rf"{_SIZE}costophrenic (?:angles?|sulcus|sulci) {_VERB} {_ADV}blunted",),
}

# Normal statements: each sets its observations to 0.
_CLEAR = r"(?:(?:otherwise|now|well[- ]expanded and|grossly|essentially|again|both) )*clear"
NORMAL: tuple[tuple[str, tuple[str, ...]], ...] = (
    (rf"{_HEART} {_VERB} {_ADV}{_NORMAL}", ("Cardiomegaly",)),
    (r"normal(?:[- ]sized?)? (?:heart|cardiac)(?: (?:size|silhouette|contours?))?", ("Cardiomegaly",)),
    (rf"{_CARDIOMED} {_VERB} {_ADV}{_NORMAL_M}", ("Cardiomegaly", "Enlarged Cardiomediastinum")),
    (
        r"normal cardiomediastinal (?:silhouettes?|contours?|size)",
        ("Cardiomegaly", "Enlarged Cardiomediastinum"),
    ),
    (
        rf"(?:heart(?: size)?|cardiac) and (?:hilar and )?mediastinal (?:silhouettes?|contours?) {_VERB} "
        rf"{_ADV}{_NORMAL_M}",
        ("Cardiomegaly", "Enlarged Cardiomediastinum"),
    ),
    (rf"{_MEDIAST} {_VERB} {_ADV}{_NORMAL_M}", ("Enlarged Cardiomediastinum",)),
    (
        rf"lungs? (?:{_VERB} )?{_CLEAR}(?! of\b)",
        ("Lung Opacity", "Consolidation", "Edema", "Pneumonia"),
    ),
    (r"clear lungs", ("Lung Opacity", "Consolidation", "Edema", "Pneumonia")),
    (
        rf"{_SIZE}costophrenic (?:angles?|sulci) {_VERB} {_ADV}(?:sharp|clear|preserved|normal)",
        ("Pleural Effusion",),
    ),
    (r"sharp costophrenic (?:angles?|sulci)", ("Pleural Effusion",)),
    (
        rf"(?:visuali[sz]ed )?(?:osseous|bony) (?:structures|skeleton) {_VERB} {_ADV}"
        r"(?:grossly )?(?:unremarkable|intact|normal)",
        ("Fracture",),
    ),
    (r"no (?:acute )?(?:osseous|bony) (?:abnormalit(?:y|ies)|injury|injuries)", ("Fracture",)),
)

# Look-alikes that are no mention of an observation; matched instead of the mention inside them.
BLOCKERS = (
    r"pericardial (?:effusions?|fluid)",
    r"joint effusions?",
    r"(?:soft[- ]tissue|subcutaneous) edema",
    r"mass effect",
    r"(?:osseous|bone|bony|lytic|sclerotic|blastic|skin) lesions?",
)

NEG, UNC = "negation", "uncertainty"
PRE, POST, BOTH = "pre", "post", "both"
_NOT_SEEN = (
    r"(?:seen|identified|present|visuali[sz]ed|appreciated|evident|demonstrated|detected|noted|observed)"
)
CUES: tuple[tuple[str, str, str], ...] = (
    # (polarity, direction, pattern)
    (
        UNC,
        POST,
        r"(?:cannot|can not|can't|could not|may not) be (?:entirely |completely )?(?:excluded|ruled out)",
    ),
    (UNC, POST, r"(?:is |are )?not (?:entirely |completely )?(?:excluded|ruled out)"),
    (
        UNC,
        POST,
        r"(?:is|are) (?:(?:felt|thought) )?"
        r"(?:possible|(?:un)?likely|probable|suspected|questioned|questionable|suggested|considered)",
    ),
    (UNC, PRE, r"(?:cannot|can not|can't|could not|difficult to) (?:exclude|rule out)"),
    (UNC, PRE, r"(?:may|might|could)(?: represent| reflect| be)?"),
    (
        UNC,
        PRE,
        r"possibl[ey]|probabl[ey]|(?:most )?likely|unlikely|presumed|presumably|equivocal|indeterminate",
    ),
    (UNC, PRE, r"questionable|question of|suspect(?:ed)?|suspicious for|suspicion (?:of|for)"),
    (UNC, PRE, r"suggest(?:s|ing|ive of)?|concerning for|concern for|worrisome for|borderline"),
    (UNC, PRE, r"rule out|r/o|differential(?: diagnosis)?(?: includes| of)?|consider(?:ed)?"),
    (UNC, PRE, r"no new"),  # CheXpert: "no new X" does not say X is absent
    (UNC, BOTH, r"versus|vs"),
    (NEG, POST, rf"(?:is |are |was |were )?not {_NOT_SEEN}|no longer {_NOT_SEEN}"),
    (
        NEG,
        POST,
        r"(?:has |have |had )?resolved|(?:has |have )?cleared|(?:is |are )?absent|(?:is |are )?ruled out",
    ),
    (NEG, POST, r"(?:has been |have been |is |are |was |were )?removed|(?:has been |is |was )excluded"),
    (
        NEG,
        PRE,
        r"no (?:radiographic |definite |convincing )?(?:evidence|signs?) of|negative for|free of|clear of",
    ),
    (NEG, PRE, r"without|absence of|resolution of|(?:interval )?removal of|neither|nor|never|none|no|not"),
)
PSEUDO = (  # look like negation, assert nothing absent: "no change in the effusion"
    r"no (?:significant |interval |appreciable |substantial )*change",
    r"not (?:significantly )?changed",
    r"without (?:significant |interval )*change",
    r"no (?:significant )?(?:increase|decrease)",
)
SCOPE_ENDS = (rf"(?:is|are|was|were) (?:now |again |also )?{_NOT_SEEN}",)
CLAUSE_BREAKS = (
    r"but|however|although|though|except|whereas|apart from|aside from",
    r"and (?=(?:the|there|a|an|no|this|these|is|are)\b)",
)

# ---------------------------------------------------------------------------------------------
# The one compiled scanner
# ---------------------------------------------------------------------------------------------

MENTION, STATEMENT, NORMAL_KIND, BLOCK, CUE, PSEUDO_KIND, SCOPE_END, BREAK = (
    "mention",
    "statement",
    "normal",
    "block",
    "cue",
    "pseudo",
    "scope_end",
    "break",
)


def _specs() -> list[tuple[str, object, str]]:
    """(kind, payload, pattern) in the order the alternation tries them at one position."""

    def longest_first(items):
        return sorted(items, key=lambda item: -len(item[2]))

    normal = longest_first((NORMAL_KIND, obs, p) for p, obs in NORMAL)
    statements = longest_first((STATEMENT, o, p) for o, ps in STATEMENTS.items() for p in ps)
    pseudo = longest_first((PSEUDO_KIND, None, p) for p in PSEUDO)
    # cues keep their written order: the specific one first ("not seen" before "not")
    unc = [(CUE, (pol, d), p) for pol, d, p in CUES if pol == UNC]
    neg = [(CUE, (pol, d), p) for pol, d, p in CUES if pol == NEG]
    block = longest_first((BLOCK, None, p) for p in BLOCKERS)
    mentions = longest_first((MENTION, o, p) for o, ps in MENTIONS.items() for p in ps)
    ends = [(SCOPE_END, None, p) for p in SCOPE_ENDS] + [(BREAK, None, p) for p in CLAUSE_BREAKS]
    # scope ends before negation: "no effusion is seen" must not read "is seen" as part of a cue
    return normal + statements + pseudo + unc + ends + neg + block + mentions


def _compile() -> tuple[re.Pattern, list[tuple[str, object]]]:
    specs = _specs()
    words = "|".join(rf"(?P<g{i}>(?:{p})\b)" for i, (_, _, p) in enumerate(specs))
    end = rf"(?P<g{len(specs)}>(?<!\bvs)\.(?!\d)|[;:!?])"  # sentence end; not "1.5", not "vs."
    kinds = [(kind, payload) for kind, payload, _ in specs] + [(BREAK, None)]
    # the alternatives are tried only where a word starts: 5x faster than at every character
    return re.compile(rf"(?<!\w)(?=\w)(?:{words})|{end}"), kinds


_SCANNER, _KINDS = _compile()
_PARAGRAPH = re.compile(r"\n\s*\n")
_SPACE = re.compile(r"\s+")
_LETTER = re.compile(r"[a-z]")


def _tokens(text: str) -> list[tuple[str, object, str]]:
    text = _SPACE.sub(" ", _PARAGRAPH.sub(" . ", text)).lower()
    return [(*_KINDS[int(m.lastgroup[1:])], m.group()) for m in _SCANNER.finditer(text)]


def _clauses(tokens):
    clause = []
    for tok in tokens:
        if tok[0] == BREAK:
            if clause:
                yield clause
            clause = []
        else:
            clause.append(tok)
    if clause:
        yield clause


def _label_clause(clause: list) -> list[tuple[str, int, str]]:
    """(observation, value, matched text) for every mention and normal statement of one clause."""
    n = len(clause)
    pre: list[str | None] = [None] * n
    post: list[str | None] = [None] * n
    active = None
    for i, (kind, payload, _) in enumerate(clause):  # forward: pre-cues
        if kind == CUE:
            active = payload[0] if payload[1] in (PRE, BOTH) else None
        elif kind in (SCOPE_END, PSEUDO_KIND, NORMAL_KIND):
            active = None
        elif kind == MENTION:
            pre[i] = active
        elif kind == STATEMENT:
            pre[i] = active if active == UNC else None
            active = None
    active = None
    for i in range(n - 1, -1, -1):  # backward: post-cues
        kind, payload, _ = clause[i]
        if kind == CUE:
            active = payload[0] if payload[1] in (POST, BOTH) else None
        elif kind in (SCOPE_END, PSEUDO_KIND, NORMAL_KIND, STATEMENT):
            active = None
        elif kind == MENTION:
            post[i] = active
    out = []
    for i, (kind, payload, text) in enumerate(clause):
        if kind == NORMAL_KIND:
            out.extend((obs, NEGATIVE, text) for obs in payload)
        elif kind in (MENTION, STATEMENT):
            cues = (pre[i], post[i])
            value = UNCERTAIN if UNC in cues else NEGATIVE if NEG in cues else POSITIVE
            out.append((payload, value, text))
    return out


def explain(text: str) -> list[tuple[str, int, str]]:
    """Every labeled mention of a report, in order: (observation, 1 / 0 / -1, the matched text)."""
    return [m for clause in _clauses(_tokens(text)) for m in _label_clause(clause)]


@lru_cache(maxsize=8192)
def _label_tuple(text: str) -> tuple[int | None, ...]:
    found: dict[str, set[int]] = {}
    for obs, value, _ in explain(text):
        found.setdefault(obs, set()).add(value)
    labels: dict[str, int | None] = {}
    for obs in CHEXPERT_OBSERVATIONS:
        values = found.get(obs, ())
        # CheXpert's aggregation: positive beats uncertain beats negative
        labels[obs] = next((v for v in (POSITIVE, UNCERTAIN, NEGATIVE) if v in values), None)
    finding = any(labels[o] in (POSITIVE, UNCERTAIN) for o in CHEXPERT_OBSERVATIONS if o != SUPPORT_DEVICES)
    if not finding and _LETTER.search(text.lower()):
        labels[NO_FINDING] = POSITIVE
    return tuple(labels[o] for o in CHEXPERT_OBSERVATIONS)


def label_report(text: str) -> dict[str, int | None]:
    """{observation: 1 positive, 0 negative, -1 uncertain, None not mentioned} for the 14 observations."""
    if not isinstance(text, str):
        raise TypeError(f"label_report takes report text (str), got {type(text).__name__}")
    return dict(zip(CHEXPERT_OBSERVATIONS, _label_tuple(text)))


def label_reports(texts: Iterable[str]) -> list[dict[str, int | None]]:
    """``label_report`` of each text of a batch, in order."""
    return [label_report(t) for t in texts]


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------


def _check_policy(uncertain: str) -> None:
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain must be one of {', '.join(UNCERTAIN_POLICIES)}, got {uncertain!r}")


def _check_observations(observations: Sequence[str]) -> None:
    unknown = [o for o in observations if o not in CHEXPERT_OBSERVATIONS]
    if unknown:
        raise ValueError(f"unknown observation(s) {unknown}; known: {', '.join(CHEXPERT_OBSERVATIONS)}")


def positive_labels(
    labels: dict[str, int | None],
    uncertain: str = "positive",
    observations: Sequence[str] = CHEXPERT_OBSERVATIONS,
) -> set[str]:
    """The observations counted positive: 1, and -1 too when ``uncertain="positive"``."""
    _check_policy(uncertain)
    counted = (POSITIVE, UNCERTAIN) if uncertain == "positive" else (POSITIVE,)
    return {o for o in observations if labels.get(o) in counted}


def label_agreement(
    hyp: str,
    ref: str,
    observations: Sequence[str] = CHEXPERT_OBSERVATIONS,
    uncertain: str = "positive",
) -> float:
    """F1 in [0, 1] of the positive labels of a generated report against its reference.

    Micro over ``observations``: 2|H & R| / (|H| + |R|); 1.0 when neither has a positive.
    ``uncertain="ignore"`` leaves out the observations either report is uncertain about.
    """
    return agreement(label_report(hyp), label_report(ref), observations, uncertain)


def agreement(
    h: dict[str, int | None],
    r: dict[str, int | None],
    observations: Sequence[str] = CHEXPERT_OBSERVATIONS,
    uncertain: str = "positive",
) -> float:
    """``label_agreement`` of two reports' labels, from whichever labeler gave them (this one, CheXbert)."""
    _check_policy(uncertain)
    _check_observations(observations)
    if uncertain == "ignore":
        observations = [o for o in observations if UNCERTAIN not in (h[o], r[o])]
    hp, rp = positive_labels(h, uncertain, observations), positive_labels(r, uncertain, observations)
    if not hp and not rp:
        return 1.0
    return 2 * len(hp & rp) / (len(hp) + len(rp))


def label_f1(hyps: Sequence[str], refs: Sequence[str], uncertain: str = "positive") -> dict:
    """Corpus F1 of the positive labels: ``micro_f1_14``, ``macro_f1_14``, ``micro_f1_5``,
    ``macro_f1_5``, ``per_observation`` (F1 per observation), ``n``. F1 with no positive on either side
    is 0, as sklearn reports it (zero_division=0)."""
    _check_policy(uncertain)
    if len(hyps) != len(refs):
        raise ValueError(
            f"label_f1 needs one reference per report: {len(hyps)} reports, {len(refs)} references"
        )
    counts = {o: [0, 0, 0] for o in CHEXPERT_OBSERVATIONS}  # tp, fp, fn
    for h, r in zip(label_reports(hyps), label_reports(refs)):
        hp, rp = positive_labels(h, uncertain), positive_labels(r, uncertain)
        for o, c in counts.items():
            if uncertain == "ignore" and UNCERTAIN in (h[o], r[o]):
                continue
            c[0] += o in hp and o in rp
            c[1] += o in hp and o not in rp
            c[2] += o in rp and o not in hp

    def f1(tp, fp, fn):
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0

    per = {o: f1(*c) for o, c in counts.items()}
    out = {"n": len(hyps), "uncertain": uncertain, "per_observation": per}
    for name, group in (("14", CHEXPERT_OBSERVATIONS), ("5", CHEXBERT_5)):
        summed = [sum(counts[o][k] for o in group) for k in range(3)]
        out[f"micro_f1_{name}"] = f1(*summed)
        out[f"macro_f1_{name}"] = sum(per[o] for o in group) / len(group)
    return out
