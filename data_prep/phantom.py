"""Synthetic "phantom" chest X-rays with exact ground-truth boxes, as records of every task.

The phantom set lets the whole pipeline (SFT, cold start, GRPO, evaluation) run offline on a
CPU, and gives a tiny model something it can really learn in minutes: each finding is drawn
with a strong signal at a canonical place, and its box is the exact extent of what was drawn.

    python -m data_prep.phantom --n 1000 --out data/phantom [--seed 0] [--size 224]

writes ``images/*.png`` (8-bit grayscale, already ``size x size``, the model frame),
``records.jsonl`` (the one schema of data_prep.schema; every task for every study),
``frame.json`` and ``ledger.json``/``rejects.jsonl``. The same seed gives byte-identical files.

Conventions
-----------
* Radiological convention: the image is a frontal (PA) view seen from the front, so the
  patient's RIGHT is on the IMAGE LEFT. Every "right"/"left" in labels, text and meta is the
  patient's side; a right-sided finding's box lies in the left half of the image.
* Boxes are integer pixels ``[x_min, y_min, x_max, y_max]`` of the stored image, with the
  pixel column i covering [i, i + 1), so a box that reaches the right edge has x_max = size.
* Shapes are defined once, in fractions of the frame, for the patient's right hemithorax
  (image left) and mirrored for the left one, so --size only changes the resolution.
* Each lung is cut into upper / middle / lower zones; effusions sit in the lower zone,
  pneumothoraces at the apex ("upper"), consolidations and nodules in any zone.

How a study is made: a patient gets small anatomical variation (shift, scale, vessel
pattern); each study of the patient gets 0-3 non-contradictory findings (about 30% of studies
are normal); ``render`` draws the anatomy, then the findings (each returns its mask, whose
bounding box is the finding's box), then blurs and adds noise. ``study_records`` turns the
study into report, VQA, classification and grounding records.

Every record's ``meta`` holds ``findings`` (name, side, zone, label, box of each finding),
``anatomy`` (heart, right_lung and left_lung boxes), ``question_type`` (one of
QUESTION_TYPES), ``target`` (the finding a presence / location / grounding question is about),
``phantom_seed`` and ``view``; enough to write grounded reasoning without the image.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from data_prep.errors import setup_logging
from data_prep.families import DEFAULT_FAMILY, FAMILIES, get_family
from data_prep.frame import FACTOR, QWEN3_MIN_PIXELS, QWEN_MIN_PIXELS, write_frame
from data_prep.io import RECORDS, Ledger, write_jsonl
from data_prep.schema import LIST_SEP, RecordError, make_record
from rewards.parsing import format_box

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------
# Vocabulary (evaluation and rewards import these)
# --------------------------------------------------------------------------------------

SOURCE = "phantom"
FINDINGS = ("cardiomegaly", "pleural effusion", "pneumothorax", "consolidation", "nodule")
SIDES = ("right", "left")  # the patient's sides
ZONES = ("upper", "middle", "lower")
ZONAL = ("consolidation", "nodule")  # the findings that can sit in any lung zone
NO_FINDING = "no finding"
CLASS_LABELS = (*FINDINGS, NO_FINDING)  # the label set of the classification task
VQA_QUESTION_TYPES = ("presence", "location", "abnormality")
QUESTION_TYPES = ("report", *VQA_QUESTION_TYPES, "classification", "grounding")  # meta["question_type"]

NORMAL_FRACTION = 0.3
N_FINDINGS_P = {1: 0.45, 2: 0.35, 3: 0.20}  # how many findings an abnormal study has
FINDING_WEIGHTS = {
    "cardiomegaly": 1.0,
    "pleural effusion": 1.0,
    "pneumothorax": 0.8,
    "consolidation": 1.0,
    "nodule": 1.0,
}
STUDIES_PER_PATIENT = (1, 2, 3)
SPLIT_CYCLE = ("train",) * 8 + ("validation", "test")  # by patient index: 80/10/10

# Variation kept small on purpose: predicting the canonical box of a finding must reach IoU > 0.5.
PATIENT_SHIFT = 0.006  # of the frame, ~1.3 px at 224
PATIENT_SCALE = 0.015
STUDY_SHIFT = 0.002
FINDING_JITTER = 0.004
MIN_NODULE_BOX = 0.11  # a nodule box is at least this wide (25 px at 224)


@dataclass(frozen=True)
class Finding:
    """One finding: what, where (patient's side, lung zone), and a small jitter of its place."""

    name: str
    side: str | None = None  # None for cardiomegaly
    zone: str | None = None
    jx: float = 0.0  # jitter in frame fractions; each drawer says how it uses it
    jy: float = 0.0

    @property
    def label(self) -> str:
        """The box label and list item: "cardiomegaly", "right pleural effusion", "left upper lung nodule"."""
        if self.name == "cardiomegaly":
            return self.name
        if self.name in ZONAL:
            return f"{self.side} {self.zone} lung {self.name}"
        return f"{self.side} {self.name}"

    @property
    def location(self) -> str | None:
        """The answer to "Where is the ...?": "right upper lung"; None for cardiomegaly."""
        return None if self.name == "cardiomegaly" else f"{self.side} {self.zone} lung"


@dataclass(frozen=True)
class Patient:
    """Per-patient anatomy: a global shift/scale and the seed of the lung vessel pattern."""

    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    vessel_seed: int = 0


@dataclass
class Study:
    patient_id: str
    study_id: str
    split: str
    patient: Patient
    findings: list[Finding]
    noise_seed: int
    text_seed: int
    image: str | list[str] = ""  # a list when the study has a second view
    boxes: list[list[int]] = field(default_factory=list)  # one per finding, filled by render
    anatomy: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# Sampling patients, studies and findings
# --------------------------------------------------------------------------------------


def conflicts(a: Finding, b: Finding) -> bool:
    """True when two findings cannot be drawn (or reported) together."""
    if a.name == b.name:  # one of each kind: location and grounding questions stay unambiguous
        return True
    if "cardiomegaly" in (a.name, b.name):
        other = b if a.name == "cardiomegaly" else a
        # the enlarged heart covers the medial left lower zone
        return other.name in ZONAL and (other.side, other.zone) == ("left", "lower")
    if a.side != b.side:
        return False
    if "pneumothorax" in (a.name, b.name):  # the collapsed lung's side gets nothing else
        return True
    if "pleural effusion" in (a.name, b.name):
        other = b if a.name == "pleural effusion" else a
        return other.zone == "lower"
    return a.zone == b.zone  # two zonal findings in the same zone would overlap


def random_finding(rng: np.random.Generator) -> Finding:
    names = list(FINDING_WEIGHTS)
    p = np.array(list(FINDING_WEIGHTS.values()))
    name = names[rng.choice(len(names), p=p / p.sum())]
    side = SIDES[rng.integers(2)]
    jx, jy = rng.uniform(-FINDING_JITTER, FINDING_JITTER, size=2)
    if name == "cardiomegaly":
        side, zone = None, None
    elif name == "pleural effusion":
        zone = "lower"
    elif name == "pneumothorax":
        zone = "upper"
    else:
        zone = ZONES[rng.integers(3)]
    return Finding(name, side, zone, round(float(jx), 4), round(float(jy), 4))


def sample_findings(rng: np.random.Generator) -> list[Finding]:
    """0-3 mutually compatible findings, in FINDINGS order."""
    if rng.random() < NORMAL_FRACTION:
        return []
    k = int(rng.choice(list(N_FINDINGS_P), p=list(N_FINDINGS_P.values())))
    chosen: list[Finding] = []
    for _ in range(100):  # rejection sampling; a compatible set always exists for k <= 3
        if len(chosen) == k:
            break
        cand = random_finding(rng)
        if not any(conflicts(cand, f) for f in chosen):
            chosen.append(cand)
    return sorted(chosen, key=lambda f: FINDINGS.index(f.name))


def plan_studies(n: int, seed: int) -> list[Study]:
    """Patients with 1-3 studies each until there are n studies; splits by patient index."""
    studies: list[Study] = []
    p = 0
    while len(studies) < n:
        # one generator per patient / study: a study does not change when n changes
        prng = np.random.default_rng([seed, p])
        shift = prng.uniform(-PATIENT_SHIFT, PATIENT_SHIFT, size=2)
        scale = 1.0 + prng.uniform(-PATIENT_SCALE, PATIENT_SCALE)
        vessel_seed = int(prng.integers(2**31))
        pid = f"p{p + 1:04d}"
        for s in range(int(prng.choice(STUDIES_PER_PATIENT))):
            if len(studies) == n:
                break
            srng = np.random.default_rng([seed, p, s])
            dx, dy = shift + srng.uniform(-STUDY_SHIFT, STUDY_SHIFT, size=2)
            patient = Patient(round(float(dx), 4), round(float(dy), 4), round(float(scale), 4), vessel_seed)
            sid = f"{pid}_s{s + 1:02d}"
            studies.append(
                Study(
                    patient_id=pid,
                    study_id=sid,
                    split=SPLIT_CYCLE[p % len(SPLIT_CYCLE)],
                    patient=patient,
                    findings=sample_findings(srng),
                    noise_seed=int(srng.integers(2**31)),
                    text_seed=int(srng.integers(2**31)),
                    image=f"images/{sid}.png",
                )
            )
        p += 1
    return studies


# --------------------------------------------------------------------------------------
# Drawing. Values are X-ray attenuation in [0, 1]: air dark, soft tissue grey, bone bright.
# --------------------------------------------------------------------------------------

BACKGROUND, SOFT_TISSUE, LUNG_AIR, ABDOMEN = 0.05, 0.47, 0.15, 0.62
MEDIASTINUM, HEART, TRACHEA = 0.66, 0.68, 0.40
RIB, CLAVICLE, SPINE = 0.09, 0.13, 0.06  # added on top
FLUID, PTX_AIR, PLEURAL_LINE = 0.70, 0.07, 0.45
NODULE, CONSOLIDATION = 0.55, 0.50  # added on top of the lung

# Canonical anatomy, in frame fractions, for the patient's right side (image left).
LUNG = (0.30, 0.62, 0.17, 0.50)  # ellipse cx, cy, ax, ay; its top is the apex, the dome cuts it
LEFT_DROP = 0.012  # the left lung and dome sit a little lower than the right (liver)
DOME_TOP, DOME_X, DOME_CURVE = 0.70, 0.32, 2.8
HILUM = (0.41, 0.43)
HEART_NORMAL = (0.545, 0.645, 0.145, 0.12)  # in image coordinates: cx, cy, ax, ay
HEART_LARGE = (0.565, 0.645, 0.215, 0.145)  # contains the normal heart; cardiothoracic ratio ~0.6
ZONE_CENTER = {"upper": (0.29, 0.28), "middle": (0.26, 0.45), "lower": (0.225, 0.59)}
NODULE_RADIUS = 0.032
CONSOLIDATION_AXES = (0.075, 0.055)
PTX_GAP = 0.055  # how far the lung edge has fallen away from the chest wall
PTX_BOTTOM, PTX_MEDIAL = 0.60, 0.40  # the rim is drawn above / lateral to these
EFFUSION_LEVEL, EFFUSION_MENISCUS = 0.655, 0.075  # medial fluid level; how much higher laterally


class Canvas:
    """Pixel-centre coordinates in canonical frame fractions (patient shift/scale undone)."""

    def __init__(self, size: int, patient: Patient):
        self.size = size
        c = (np.arange(size, dtype=np.float32) + 0.5) / size
        x, y = np.meshgrid(c, c)
        self.x = (x - 0.5 - patient.dx) / patient.scale + 0.5
        self.y = (y - 0.5 - patient.dy) / patient.scale + 0.5
        self.img = np.full((size, size), BACKGROUND, dtype=np.float32)

    def side_xy(self, side: str):
        """Coordinates in which the given side looks like the right side (image left)."""
        if side == "right":
            return self.x, self.y
        return 1.0 - self.x, self.y - LEFT_DROP


def ellipse_r2(x, y, cx, cy, ax, ay):
    """Squared normalised radius: < 1 inside the ellipse."""
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2


def dome_y(xr):
    return DOME_TOP + DOME_CURVE * (xr - DOME_X) ** 2


def lung_mask(cv: Canvas, side: str):
    xr, yr = cv.side_xy(side)
    return (ellipse_r2(xr, yr, *LUNG) < 1) & (yr < dome_y(xr))


def heart_params(findings: list[Finding]):
    cm = next((f for f in findings if f.name == "cardiomegaly"), None)
    if cm is None:
        return HEART_NORMAL
    cx, cy, ax, ay = HEART_LARGE
    return (cx + cm.jx, cy + cm.jy, ax, ay)


def bbox(mask: np.ndarray, pad: int = 0, min_size: int = 0) -> list[int]:
    """[x_min, y_min, x_max, y_max] of a mask (x_max exclusive), padded, clipped to the frame."""
    size = mask.shape[0]
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    x0, x1, y0, y1 = cols[0] - pad, cols[-1] + 1 + pad, rows[0] - pad, rows[-1] + 1 + pad
    if x1 - x0 < min_size:  # grow around the centre (small nodules get a learnable box)
        grow = min_size - (x1 - x0)
        x0, x1 = x0 - grow // 2, x1 + grow - grow // 2
    if y1 - y0 < min_size:
        grow = min_size - (y1 - y0)
        y0, y1 = y0 - grow // 2, y1 + grow - grow // 2
    return [int(max(x0, 0)), int(max(y0, 0)), int(min(x1, size)), int(min(y1, size))]


def draw_anatomy(cv: Canvas, patient: Patient, heart) -> dict:
    """Body, lungs with vessels, abdomen, mediastinum, heart, bones. Returns region masks."""
    x, y = cv.x, cv.y
    ax = np.abs(x - 0.5)
    # body: a neck widening into the shoulders, then a gently curved chest wall
    half_width = 0.10 + 0.36 * np.clip(y / 0.16, 0, 1) ** 0.6 + 0.015 * np.sin(np.pi * np.clip(y, 0, 1))
    body = ax < half_width
    cv.img[body] = SOFT_TISSUE + 0.06 * (ax[body] / half_width[body]) ** 4
    dome = np.where(x < 0.5, dome_y(x), dome_y(1.0 - x) + LEFT_DROP)
    above_dome = y < dome
    cv.img[body & ~above_dome] = ABDOMEN

    lungs = {}
    rng = np.random.default_rng(patient.vessel_seed)
    texture = gaussian_filter(rng.standard_normal((cv.size, cv.size)).astype(np.float32), cv.size / 190)
    for side in SIDES:
        m = lung_mask(cv, side)
        _, yr = cv.side_xy(side)
        base = LUNG_AIR + 0.08 * np.clip((yr[m] - 0.35) / 0.4, 0, 1)  # bases overlap more soft tissue
        cv.img[m] = base + lung_markings(cv, side, m, rng) + 0.035 * texture[m]
        lungs[side] = m

    # the mediastinum runs from the neck down to the diaphragm, widening a little
    mediastinum = body & above_dome & (ax < 0.055 + 0.02 * np.clip(y / 0.6, 0, 1))
    mediastinum |= body & (ellipse_r2(x, y, 0.565, 0.29, 0.04, 0.035) < 1)  # aortic knob
    cv.img[mediastinum] = MEDIASTINUM
    trachea = (ax < 0.016 * (1 - 0.3 * y / 0.34)) & (y < 0.34)
    cv.img[trachea] = TRACHEA
    # the heart sits on the diaphragm: only the part above the domes shows
    heart_mask = (ellipse_r2(x, y, *heart) < 1) & above_dome
    cv.img[heart_mask] = HEART
    # spine: brighter vertebral bodies with darker disc spaces
    spine = body & (ax < 0.032)
    cv.img[spine] += SPINE * (0.6 + 0.4 * (np.cos(y[spine] * 2 * np.pi / 0.055) > -0.6))
    draw_bones(cv, body & above_dome & ~mediastinum & ~heart_mask)
    return {"lungs": lungs, "heart": heart_mask, "mediastinum": mediastinum}


def lung_markings(cv: Canvas, side: str, lung: np.ndarray, rng: np.random.Generator):
    """Vessels fanning out from the hilum, fading towards the periphery (values on lung pixels)."""
    xr, yr = cv.side_xy(side)
    vx, vy = HILUM[0] - xr[lung], yr[lung] - HILUM[1]  # vx > 0 laterally
    r = np.sqrt(vx**2 + vy**2) + 1e-6
    theta = np.arctan2(vy, vx)
    out = 0.10 * np.exp(-((r / 0.04) ** 2))  # the hilum itself
    r_over_width = r / (0.007 * np.exp(-r / 0.35))  # vessels taper
    # the branches leave the hilum (not one bright point) and fade towards the periphery
    strength = 0.07 * np.clip((r - 0.01) / 0.04, 0, 1) * np.exp(-r / 0.2)
    for t0 in np.linspace(-1.25, 1.15, 9) + rng.uniform(-0.12, 0.12, 9):
        bend = float(rng.uniform(-0.8, 0.8))
        out += strength * np.exp(-(((theta - float(t0) - bend * r) * r_over_width) ** 2))
    return out


def draw_bones(cv: Canvas, region):
    """Posterior ribs (curved bands), fainter anterior ribs and the clavicles."""
    for side in SIDES:
        xr, yr = cv.side_xy(side)
        d = 0.5 - xr  # distance from the midline
        on_side = region & (d > 0.04) & (d < 0.44)
        d, yr = d[on_side], yr[on_side]
        # posterior ribs rise a little from the spine, then curve down laterally
        t = (yr - (-0.45 * d + 1.5 * d**2) - 0.14) / 0.064
        k = np.round(t)
        ribs = np.exp(-(((t - k) * 0.064 / (0.009 + 0.01 * d)) ** 2)) * ((k >= 0) & (k < 10))
        # anterior ribs run from the lateral wall down towards the sternum and fade medially
        t = (yr - 0.35 * np.clip(0.42 - d, 0, None) ** 1.2 - 0.10) / 0.075
        k = np.round(t)
        fade = np.clip((d - 0.12) / 0.1, 0, 1)
        ribs += 0.4 * fade * np.exp(-(((t - k) * 0.075 / 0.010) ** 2)) * ((k >= 0) & (k < 6))
        clavicle = (d < 0.33) & (np.abs(yr - (0.158 - 0.2 * (d - 0.04))) < 0.012)
        cv.img[on_side] += RIB * ribs + CLAVICLE * clavicle


# Each finding drawer changes cv.img and returns the mask of what it drew.


def draw_cardiomegaly(cv: Canvas, f: Finding, regions: dict):
    return regions["heart"]  # already drawn large by draw_anatomy


def draw_effusion(cv: Canvas, f: Finding, pleural: np.ndarray, visible: np.ndarray):
    """Fluid at the lung base, higher laterally (meniscus), hiding the costophrenic angle."""
    xr, yr = cv.side_xy(f.side)
    lateral = np.clip((0.40 - xr) / 0.26, 0, 1) ** 2.5
    level = EFFUSION_LEVEL + f.jy - EFFUSION_MENISCUS * lateral
    m = pleural & (yr > level)
    shown = m & visible
    cv.img[shown] = FLUID + 0.5 * (yr[shown] - level[shown])  # denser towards the base
    return m


def draw_pneumothorax(cv: Canvas, f: Finding, lung: np.ndarray, visible: np.ndarray):
    """A dark, vessel-free rim at the apex and lateral wall, inside a thin visceral pleural line."""
    xr, yr = cv.side_xy(f.side)
    g = PTX_GAP + f.jx
    cx, cy, ax, ay = LUNG
    collapsed = ellipse_r2(xr, yr, cx + 0.5 * g, cy + 0.6 * g, ax - 0.5 * g, ay - 0.6 * g)
    where = lung & (yr < PTX_BOTTOM) & (xr < PTX_MEDIAL)
    rim = where & (collapsed >= 1)
    line = where & (collapsed < 1) & (np.sqrt(collapsed) > 1 - 0.009 / (ax - 0.5 * g))
    cv.img[rim & visible] = PTX_AIR
    cv.img[line & visible] = PLEURAL_LINE
    return rim | line


def draw_consolidation(cv: Canvas, f: Finding, visible: np.ndarray, rng: np.random.Generator):
    """A patchy opacity around the zone centre, with a slightly irregular edge."""
    xr, yr = cv.side_xy(f.side)
    zx, zy = ZONE_CENTER[f.zone]
    cx, cy = zx + f.jx, zy + f.jy
    angle = np.arctan2(yr - cy, xr - cx)
    p1, p2 = (float(v) for v in rng.uniform(0, 2 * np.pi, 2))
    edge = 1 + 0.10 * np.sin(3 * angle + p1) + 0.06 * np.sin(5 * angle + p2)
    r = np.sqrt(ellipse_r2(xr, yr, cx, cy, *CONSOLIDATION_AXES)) / edge
    m = visible & (r < 1)
    patch = gaussian_filter(rng.standard_normal((cv.size, cv.size)).astype(np.float32), cv.size / 75)
    patch = (patch - patch.min()) / (np.ptp(patch) + 1e-6)
    fade = np.clip((1 - r[m]) / 0.25, 0, 1) ** 0.7  # a hazy border, as airspace disease has
    cv.img[m] += CONSOLIDATION * fade * (0.65 + 0.35 * patch[m])
    return m


def draw_nodule(cv: Canvas, f: Finding):
    """A small round opacity, brightest in the middle like a projected sphere."""
    xr, yr = cv.side_xy(f.side)
    zx, zy = ZONE_CENTER[f.zone]
    r2 = ((xr - zx - f.jx) ** 2 + (yr - zy - f.jy) ** 2) / NODULE_RADIUS**2
    m = r2 < 1
    cv.img[m] += NODULE * np.sqrt(1 - r2[m])
    return m


def render(
    patient: Patient, findings: list[Finding], size: int, noise_seed: int
) -> tuple[np.ndarray, list[list[int]], dict]:
    """Draw one study: (uint8 image, one box per finding, anatomy boxes).

    Rendering the same study without a finding changes pixels only inside that finding's box
    (same patient, same noise): the tests check exactly that.
    """
    cv = Canvas(size, patient)
    regions = draw_anatomy(cv, patient, heart_params(findings))
    frng = np.random.default_rng(noise_seed + 1)  # finding shapes: not shared with the noise
    pad = max(1, round(2 * size / 224))  # the blur spreads a drawn edge by ~2 px
    boxes = []
    for f in findings:
        if f.name == "cardiomegaly":
            m = draw_cardiomegaly(cv, f, regions)
        else:
            # pleural findings lie behind the heart too, so the heart's size does not change
            # their box; they are drawn only where the heart does not hide them
            pleural = regions["lungs"][f.side] & ~regions["mediastinum"]
            visible = pleural & ~regions["heart"]
            if f.name == "pleural effusion":
                m = draw_effusion(cv, f, pleural, visible)
            elif f.name == "pneumothorax":
                m = draw_pneumothorax(cv, f, pleural, visible)
            elif f.name == "consolidation":
                m = draw_consolidation(cv, f, visible, frng)
            else:
                m = draw_nodule(cv, f)
        min_size = round(MIN_NODULE_BOX * size) if f.name == "nodule" else 0
        boxes.append(bbox(m, pad, min_size))
    anatomy = {
        "heart": bbox(regions["heart"]),
        "right_lung": bbox(regions["lungs"]["right"]),
        "left_lung": bbox(regions["lungs"]["left"]),
    }
    img = gaussian_filter(cv.img, 0.7 * size / 224)
    img += np.random.default_rng(noise_seed).normal(0, 0.018, img.shape).astype(np.float32)
    img = np.clip(img, 0, 1) ** 0.9 * 255
    return np.round(img).astype(np.uint8), boxes, anatomy


# --------------------------------------------------------------------------------------
# Text: reports, questions, answers
# --------------------------------------------------------------------------------------

FINDINGS_QUESTIONS = (
    "Describe the findings of this chest X-ray.",
    "Write the findings section of a radiology report for this chest radiograph.",
    "What are the findings on this frontal chest X-ray?",
    "Generate the findings for this chest X-ray.",
    "Please describe this chest radiograph.",
)
IMPRESSION_QUESTIONS = (
    "What is the impression for this chest X-ray?",
    "Write the impression section of the report for this chest radiograph.",
    "Summarize this chest X-ray in a short impression.",
    "Give a brief impression of this chest radiograph.",
)
# "{x}" is the finding as a noun phrase with its article
PRESENCE_PHRASE = {
    "cardiomegaly": "cardiomegaly",
    "pleural effusion": "a pleural effusion",
    "pneumothorax": "a pneumothorax",
    "consolidation": "consolidation",
    "nodule": "a nodule",
}
PRESENCE_QUESTIONS = (
    "Is there {x}?",
    "Does this chest X-ray show {x}?",
    "Is {x} present in this image?",
    "Is there evidence of {x} on this radiograph?",
)
LOCATION_QUESTIONS = (
    "Where is the {x}?",
    "Where is the {x} located?",
    "In which part of the chest is the {x}?",
    "Which lung and zone contain the {x}?",
)
ABNORMALITY_QUESTIONS = (
    "What abnormalities are seen?",
    "What abnormalities are seen in this chest X-ray?",
    "List the abnormal findings in this image.",
    "Which abnormalities does this chest radiograph show?",
)
CLASSIFICATION_QUESTIONS = (
    "Which of the following labels apply to this chest X-ray: {labels}? List all that apply.",
    "Classify this chest radiograph. Possible labels: {labels}. Give every label that applies.",
    "Select all labels that apply to this image from: {labels}.",
)
GROUNDING_QUESTIONS = (
    "Locate the {x}.",
    "Where is the {x}? Give its bounding box.",
    "Draw a bounding box around the {x}.",
    "Find the {x} and give its box as [x_min, y_min, x_max, y_max].",
)
GROUNDING_PHRASE = {"cardiomegaly": "enlarged cardiac silhouette"}  # others use the label

FINDING_SENTENCES = {
    "cardiomegaly": (
        "The cardiac silhouette is enlarged.",
        "The heart is enlarged, consistent with cardiomegaly.",
        "There is cardiomegaly with an increased cardiothoracic ratio.",
        "Cardiomegaly is present.",
    ),
    "pleural effusion": (
        "There is a {side} pleural effusion blunting the {side} costophrenic angle.",
        "A {side} pleural effusion is present with a meniscus at the {side} lung base.",
        "Blunting of the {side} costophrenic angle is consistent with a {side} pleural effusion.",
        "Fluid layers at the {side} lung base, in keeping with a {side} pleural effusion.",
    ),
    "pneumothorax": (
        "There is a {side} apical pneumothorax with a visible pleural line.",
        "A {side} pneumothorax is seen at the {side} apex, with no lung markings beyond the pleural line.",
        "A visceral pleural line with absent lung markings laterally indicates a {side} pneumothorax.",
    ),
    "consolidation": (
        "There is patchy consolidation in the {side} {zone} lung.",
        "An airspace opacity in the {side} {zone} lung is consistent with consolidation.",
        "Consolidation is seen in the {side} {zone} zone.",
    ),
    "nodule": (
        "A small rounded nodule is seen in the {side} {zone} lung.",
        "There is a well-circumscribed nodule in the {side} {zone} lung.",
        "A {side} {zone} lung nodule is noted.",
    ),
}
NORMAL_HEART = (
    "The heart size is normal.",
    "The cardiac silhouette is within normal limits.",
    "Normal heart size.",
    "The cardiomediastinal contours are normal.",
)
CLEAR_LUNGS = (
    "The lungs are clear.",
    "No focal consolidation is seen.",
    "The lungs are well expanded and clear.",
)
NO_PLEURAL = (
    "There is no pleural effusion or pneumothorax.",
    "No pleural effusion or pneumothorax is seen.",
    "The costophrenic angles are sharp and there is no pneumothorax.",
)
NO_EFFUSION = ("There is no pleural effusion.", "No pleural effusion is seen.")
NO_PNEUMOTHORAX = ("There is no pneumothorax.", "No pneumothorax is seen.")
BONES = ("The visualized osseous structures are unremarkable.", "No acute osseous abnormality.")
NORMAL_IMPRESSIONS = (
    "No acute cardiopulmonary process.",
    "Normal chest radiograph.",
    "No acute cardiopulmonary abnormality.",
)
IMPRESSION_PHRASE = {
    "cardiomegaly": "cardiomegaly",
    "pleural effusion": "{side} pleural effusion",
    "pneumothorax": "{side} pneumothorax",
    "consolidation": "{side} {zone} lung consolidation",
    "nodule": "{side} {zone} lung nodule",
}


def pick(rng: np.random.Generator, options):
    return options[rng.integers(len(options))]


def findings_report(findings: list[Finding], rng: np.random.Generator) -> str:
    """Heart, then each finding, then the normal statements that still apply."""
    names = {f.name for f in findings}
    sentences = [] if "cardiomegaly" in names else [pick(rng, NORMAL_HEART)]
    for f in findings:
        sentences.append(pick(rng, FINDING_SENTENCES[f.name]).format(side=f.side, zone=f.zone))
    if not names & {"consolidation", "nodule"}:
        sentences.append(pick(rng, CLEAR_LUNGS))
    has_eff, has_ptx = "pleural effusion" in names, "pneumothorax" in names
    if not has_eff and not has_ptx:
        sentences.append(pick(rng, NO_PLEURAL))
    elif not has_eff:
        sentences.append(pick(rng, NO_EFFUSION))
    elif not has_ptx:
        sentences.append(pick(rng, NO_PNEUMOTHORAX))
    if rng.random() < 0.5:
        sentences.append(pick(rng, BONES))
    return " ".join(sentences)


def impression(findings: list[Finding], rng: np.random.Generator) -> str:
    if not findings:
        return pick(rng, NORMAL_IMPRESSIONS)
    phrases = [IMPRESSION_PHRASE[f.name].format(side=f.side, zone=f.zone) for f in findings]
    if len(phrases) > 1 and rng.random() < 0.3:
        return " ".join(f"{i}. {p[0].upper() + p[1:]}." for i, p in enumerate(phrases, 1))
    text = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return text[0].upper() + text[1:] + "."


def abnormality_answer(findings: list[Finding]) -> str:
    return LIST_SEP.join(f.label for f in findings) if findings else NO_FINDING


def classification_answer(findings: list[Finding]) -> str:
    return LIST_SEP.join(f.name for f in findings) if findings else NO_FINDING


def study_records(study: Study, size: int, seed: int) -> list[dict]:
    """The record fields (not yet validated) of every task for one rendered study."""
    rng = np.random.default_rng(study.text_seed)
    findings = study.findings
    all_boxes = [{"label": f.label, "box": b} for f, b in zip(findings, study.boxes)]
    box_of = {f.name: {"label": f.label, "box": b} for f, b in zip(findings, study.boxes)}
    meta_findings = [
        {"name": f.name, "side": f.side, "zone": f.zone, "label": f.label, "box": b}
        for f, b in zip(findings, study.boxes)
    ]
    rows = []

    def add(task, question, answer, boxes, question_type=None, target=None):
        meta = {
            "findings": meta_findings,
            "anatomy": study.anatomy,
            "question_type": question_type,
            "phantom_seed": seed,
            "view": "PA" if isinstance(study.image, str) else "PA+PA",
        }
        if target is not None:
            meta["target"] = target
        n = sum(r["task"] == task for r in rows)
        rows.append(
            {
                "id": f"{study.study_id}-{task}-{n}",
                "source": SOURCE,
                "task": task,
                "question": question,
                "answer": answer,
                "boxes": boxes,
                "image": study.image,
                "width": size,
                "height": size,
                "patient_id": study.patient_id,
                "study_id": study.study_id,
                "split": study.split,
                "meta": meta,
            }
        )

    add("report_findings", pick(rng, FINDINGS_QUESTIONS), findings_report(findings, rng), all_boxes, "report")
    add("report_impression", pick(rng, IMPRESSION_QUESTIONS), impression(findings, rng), all_boxes, "report")

    # presence: every present finding, and as many absent ones (at least one), for a yes/no balance
    present = [f.name for f in findings]
    absent = [n for n in FINDINGS if n not in present]
    n_absent = min(len(absent), max(1, len(present)))
    asked = [(n, True) for n in present] + [
        (absent[i], False) for i in rng.permutation(len(absent))[:n_absent]
    ]
    for name, is_present in asked:
        q = pick(rng, PRESENCE_QUESTIONS).format(x=PRESENCE_PHRASE[name])
        add("vqa", q, "yes" if is_present else "no", [box_of[name]] if is_present else [], "presence", name)
    for f in findings:
        if f.location is not None:
            q = pick(rng, LOCATION_QUESTIONS).format(x=f.name)
            add("vqa", q, f.location, [box_of[f.name]], "location", f.name)
    add("vqa", pick(rng, ABNORMALITY_QUESTIONS), abnormality_answer(findings), all_boxes, "abnormality")

    labels = ", ".join(CLASS_LABELS)
    q = pick(rng, CLASSIFICATION_QUESTIONS).format(labels=labels)
    add("classification", q, classification_answer(findings), all_boxes, "classification")

    for f, b in zip(findings, study.boxes):
        q = pick(rng, GROUNDING_QUESTIONS).format(x=GROUNDING_PHRASE.get(f.name, f.label))
        add("grounding", q, format_box(b), [box_of[f.name]], "grounding", f.name)
    return rows


# --------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------


def check_args(n: int, size: int, views: int, factor: int = FACTOR) -> None:
    """ValueError naming the flag when an argument of ``generate`` is out of range."""
    if size % factor or size < 112:
        raise ValueError(f"--size must be a multiple of {factor} and at least 112, got {size}")
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    if views not in (1, 2):
        raise ValueError(f"--views must be 1 or 2, got {views}")


def generate(
    n: int,
    out: str | Path,
    seed: int = 0,
    size: int = 224,
    progress: bool = True,
    views: int = 1,
    family: str | None = None,
) -> dict:
    """Write n phantom studies (images, records, frame, ledger) into ``out``; return the ledger dict.

    ``views=2`` gives every study a second image, a repeat PA exposure (same patient and findings,
    other noise), for multi-image pipelines: records then hold two images, the boxes on the first.
    ``family`` (data_prep.families) sets the side multiple the size must respect and is recorded in
    frame.json; boxes are stored in absolute pixels whatever the family.
    """
    fam = get_family(family)
    check_args(n, size, views, fam.factor)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    ledger = Ledger("phantom")
    records: list[dict] = []
    for study in tqdm(plan_studies(n, seed), desc="phantom studies", unit="study", disable=not progress):
        img, study.boxes, study.anatomy = render(study.patient, study.findings, size, study.noise_seed)
        Image.fromarray(img, mode="L").save(out / study.image, format="PNG", compress_level=3)
        if views == 2:
            second = study.image.replace(".png", "-v2.png")
            img2, _, _ = render(study.patient, study.findings, size, study.noise_seed + 1_000_003)
            Image.fromarray(img2, mode="L").save(out / second, format="PNG", compress_level=3)
            study.image = [study.image, second]
        ledger.read += 1
        for fields in study_records(study, size, seed):
            try:
                records.append(make_record(**fields))
            except RecordError as e:
                ledger.reject("invalid record", where=fields["id"], detail=str(e), row=fields)
    # the records file goes last and atomically: it never names an image that is not there yet
    ledger.written = write_jsonl(out / RECORDS, records)
    min_pixels = QWEN3_MIN_PIXELS if fam.name == "qwen3-vl" else QWEN_MIN_PIXELS  # the tiny models' frame
    write_frame(out, min_pixels=min_pixels, max_pixels=size * size, factor=fam.factor, family=fam.name)
    ledger.extra = ledger_counts(records, seed, size)
    ledger.save(out)
    log.info("%s", ledger.summary())
    return ledger.as_dict()


def ledger_counts(records: list[dict], seed: int, size: int) -> dict:
    studies = {r["study_id"]: r for r in records}
    findings = Counter(f["name"] for r in studies.values() for f in r["meta"]["findings"])
    return {
        "seed": seed,
        "size": size,
        "patients": len({r["patient_id"] for r in records}),
        "studies": len(studies),
        "normal_studies": sum(not r["meta"]["findings"] for r in studies.values()),
        "studies_per_split": dict(Counter(r["split"] for r in studies.values())),
        "records_per_split": dict(Counter(r["split"] for r in records)),
        "records_per_task": dict(Counter(r["task"] for r in records)),
        "vqa_per_question_type": dict(
            Counter(r["meta"]["question_type"] for r in records if r["task"] == "vqa")
        ),
        "findings": {name: findings[name] for name in FINDINGS},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="number of studies (default 1000)")
    parser.add_argument("--out", default="data/phantom", help="dataset folder (default data/phantom)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--size", type=int, default=224, help="image side in pixels, a multiple of the family's 28/32"
    )
    parser.add_argument(
        "--family", choices=list(FAMILIES), default=DEFAULT_FAMILY, help="model family the frame is for"
    )
    parser.add_argument(
        "--views", type=int, default=1, choices=(1, 2), help="images per study (2: a repeat PA)"
    )
    args = parser.parse_args(argv)
    setup_logging()
    try:
        check_args(args.n, args.size, args.views, get_family(args.family).factor)
    except ValueError as e:
        parser.error(str(e))
    generate(args.n, args.out, seed=args.seed, size=args.size, views=args.views, family=args.family)


if __name__ == "__main__":
    main()
