"""rewards.report_labels: the CheXpert-observation labeler, its scopes, and the label agreement scores.

Every expected label below was written from reading the sentence under the rules in the module's
docstring, not from running the labeler.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from data_prep import phantom
from data_prep.labels import CHEXPERT_LABELS
from rewards import report_labels as rl
from rewards.report_labels import (
    CHEXBERT_5,
    CHEXPERT_OBSERVATIONS,
    explain,
    label_agreement,
    label_f1,
    label_report,
    label_reports,
)

AT, CM, CO, ED = "Atelectasis", "Cardiomegaly", "Consolidation", "Edema"
EC, FR, LL, LO = "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion", "Lung Opacity"
NF, PE, PO, PN = "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia"
PTX, SD = "Pneumothorax", "Support Devices"

# (report, every label that is not None)
CASES = [
    # negation, lists under one cue
    ("No pleural effusion or pneumothorax.", {PE: 0, PTX: 0, NF: 1}),
    ("No focal consolidation, pleural effusion, or pneumothorax.", {CO: 0, PE: 0, PTX: 0, NF: 1}),
    ("Cardiomegaly without pulmonary edema.", {CM: 1, ED: 0}),
    ("No evidence of pneumonia. Stable cardiomegaly.", {PN: 0, CM: 1}),
    # the sentence ends the scope
    ("No pneumothorax. Small left pleural effusion.", {PTX: 0, PE: 1}),
    # post-negation
    ("Pneumothorax has resolved.", {PTX: 0, NF: 1}),
    ("Pneumothorax is not seen.", {PTX: 0, NF: 1}),
    ("The left pleural effusion is no longer seen.", {PE: 0, NF: 1}),
    ("Effusion and pneumothorax have resolved.", {PE: 0, PTX: 0, NF: 1}),
    # uncertainty, before and after
    ("Possible left lower lobe pneumonia.", {PN: -1}),
    ("Cannot exclude small effusion.", {PE: -1}),
    ("Right pleural effusion cannot be excluded.", {PE: -1}),
    ("Likely bibasilar atelectasis.", {AT: -1}),
    ("Pneumonia is unlikely.", {PN: -1}),
    ("Findings are suggestive of pulmonary edema.", {ED: -1}),
    ("Opacity at the right base may represent atelectasis or pneumonia.", {LO: 1, AT: -1, PN: -1}),
    ("Atelectasis vs. pneumonia.", {AT: -1, PN: -1}),
    ("Left upper lobe mass versus consolidation.", {LL: -1, CO: -1}),
    ("No new consolidation.", {CO: -1}),
    # scope breaks
    ("No pneumothorax, but there is a small right effusion.", {PTX: 0, PE: 1}),
    ("There is a right effusion and the pneumothorax has resolved.", {PE: 1, PTX: 0}),
    ("No pneumothorax is seen, consolidation is present in the right lower lobe.", {PTX: 0, CO: 1}),
    ("No change in the moderate right pleural effusion.", {PE: 1}),
    ("No nodule larger than 1.5 cm or effusion.", {LL: 0, PE: 0, NF: 1}),  # "1.5" ends no sentence
    # synonyms and look-alikes
    ("Small pericardial effusion.", {NF: 1}),
    ("Pericardial effusion and a small left pleural effusion.", {PE: 1}),
    ("Soft tissue edema of the chest wall.", {NF: 1}),
    ("Blunting of the left costophrenic angle.", {PE: 1}),
    ("Enlarged cardiac silhouette. Mild pulmonary vascular congestion.", {CM: 1, ED: 1}),
    ("The cardiac silhouette is enlarged.", {CM: 1}),
    ("Widened mediastinum.", {EC: 1}),
    ("Healed right rib fractures.", {FR: 1}),
    ("Calcified pleural plaques.", {PO: 1}),
    # normal statements
    ("Heart size is normal.", {CM: 0, NF: 1}),
    ("The heart is not enlarged.", {CM: 0, NF: 1}),
    ("Heart size and mediastinal contours are normal.", {CM: 0, EC: 0, NF: 1}),
    ("The costophrenic angles are sharp and there is no pneumothorax.", {PE: 0, PTX: 0, NF: 1}),
    ("The lungs are clear.", {LO: 0, CO: 0, ED: 0, PN: 0, NF: 1}),
    ("Lungs are clear of consolidation.", {CO: 0, NF: 1}),
    ("No acute osseous abnormality.", {FR: 0, NF: 1}),
    ("Normal chest radiograph.", {NF: 1}),
    # devices: not a pathology, so No Finding stays 1
    ("Endotracheal tube terminates 4 cm above the carina. No acute cardiopulmonary process.", {SD: 1, NF: 1}),
    ("Left PICC line tip in the SVC.", {SD: 1, NF: 1}),
    ("Interval removal of the right chest tube.", {SD: 0, NF: 1}),
    ("A visceral pleural line is seen without lung markings beyond it.", {NF: 1}),  # a line, no device
    # aggregation over mentions: positive beats uncertain beats negative
    ("Possible small right pleural effusion. Small left pleural effusion.", {PE: 1}),
    ("The lungs are clear. Possible pneumonia at the left base.", {LO: 0, CO: 0, ED: 0, PN: -1}),
    # a mixed multi-sentence report with sections and a line wrapped mid-sentence
    (
        "FINDINGS: Endotracheal tube and right IJ central line are in place. The heart is\n"
        "mildly enlarged. There is a small left pleural effusion with adjacent atelectasis. "
        "No pneumothorax.\n\nIMPRESSION: Possible early pneumonia in the left lower lobe.",
        {SD: 1, CM: 1, PE: 1, AT: 1, PTX: 0, PN: -1},
    ),
    # nothing to read: no No Finding either
    ("", {}),
    ("   \n ", {}),
]


def test_observations_are_the_label_files_columns_and_data_preps_list():
    # MIMIC-CXR's chexpert.csv and CheXpert's train.csv write the 14 in alphabetical order
    assert len(CHEXPERT_OBSERVATIONS) == 14 and list(CHEXPERT_OBSERVATIONS) == sorted(CHEXPERT_OBSERVATIONS)
    assert CHEXPERT_LABELS is CHEXPERT_OBSERVATIONS  # one list: the converters and the labeler
    assert set(CHEXBERT_5) <= set(CHEXPERT_OBSERVATIONS) and len(CHEXBERT_5) == 5


@pytest.mark.parametrize("text,expected", CASES, ids=[c[0][:48] or "empty" for c in CASES])
def test_labels(text, expected):
    labels = label_report(text)
    assert list(labels) == list(CHEXPERT_OBSERVATIONS)
    assert {o: v for o, v in labels.items() if v is not None} == expected


def test_explain_names_each_mention_in_order():
    assert explain("No pneumothorax. Small left pleural effusion.") == [
        (PTX, 0, "pneumothorax"),
        (PE, 1, "pleural effusion"),
    ]
    # the blocker swallows the look-alike: no mention at all
    assert explain("Moderate pericardial effusion.") == []


def test_batch_labels_equal_single_labels_and_bad_input_is_refused():
    texts = [c[0] for c in CASES]
    assert label_reports(texts) == [label_report(t) for t in texts]
    with pytest.raises(TypeError, match="str"):
        label_report(None)


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------

REPORT = "The heart is enlarged. Small left pleural effusion. No pneumothorax."


def test_agreement_identical_disjoint_and_negated():
    assert label_agreement(REPORT, REPORT) == 1.0
    assert label_agreement("Right pneumothorax.", "Cardiomegaly. Small left pleural effusion.") == 0.0
    # the effusion negated instead of affirmed: {CM} against {CM, PE} -> 2 * 1 / (1 + 2)
    negated = "The heart is enlarged. No pleural effusion. No pneumothorax."
    assert label_agreement(negated, REPORT) == pytest.approx(2 / 3)
    # two normal reports agree through No Finding; a finding against a normal report does not
    assert label_agreement("No acute cardiopulmonary process.", "Normal chest radiograph.") == 1.0
    assert label_agreement("Small right pneumothorax.", "Normal chest radiograph.") == 0.0
    # an empty generation has no No Finding: it does not agree with a normal report
    assert label_agreement("", "Normal chest radiograph.") == 0.0


def test_agreement_uncertain_policies_and_observation_subsets():
    hyp, ref = "Possible right lower lobe pneumonia.", "Right lower lobe pneumonia."
    assert label_agreement(hyp, ref, uncertain="positive") == 1.0
    assert label_agreement(hyp, ref, uncertain="negative") == 0.0  # {} against {PN}
    assert label_agreement(hyp, ref, uncertain="ignore") == 1.0  # PN left out; nothing else positive
    # over the 5 only, two normal reports have no positive at all: they agree
    assert label_agreement("Heart size is normal.", "The lungs are clear.", observations=CHEXBERT_5) == 1.0
    # a finding outside the chosen observations does not count
    assert (
        label_agreement("Right pneumothorax. Cardiomegaly.", "Cardiomegaly.", observations=CHEXBERT_5) == 1.0
    )
    with pytest.raises(ValueError, match="uncertain must be one of"):
        label_agreement(hyp, ref, uncertain="maybe")
    with pytest.raises(ValueError, match="unknown observation"):
        label_agreement(hyp, ref, observations=["Effusion"])


def test_corpus_f1_by_hand():
    hyps = [
        "Cardiomegaly. Small left pleural effusion.",
        "No acute cardiopulmonary process.",
        "Pulmonary edema.",
    ]
    refs = ["Cardiomegaly.", "Small right pleural effusion.", "Pulmonary edema and bibasilar atelectasis."]
    # tp/fp/fn: CM 1/0/0, PE 0/1/1, NF 0/1/0, ED 1/0/0, AT 0/0/1, all others 0/0/0
    out = label_f1(hyps, refs)
    assert out["n"] == 3
    assert out["per_observation"][CM] == 1.0 and out["per_observation"][ED] == 1.0
    assert out["per_observation"][PE] == 0.0 and out["per_observation"][AT] == 0.0
    assert out["micro_f1_5"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))  # tp 2, fp 1, fn 2
    assert out["macro_f1_5"] == pytest.approx(2 / 5)  # CM and ED 1, AT, CO, PE 0
    assert out["micro_f1_14"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 2))  # NF adds a false positive
    assert out["macro_f1_14"] == pytest.approx(2 / 14)
    with pytest.raises(ValueError, match="one reference per report"):
        label_f1(hyps, refs[:2])


# ---------------------------------------------------------------------------------------------
# The phantom generator's own reports
# ---------------------------------------------------------------------------------------------

OBSERVATION_OF = {  # phantom finding -> CheXpert observation
    "cardiomegaly": CM,
    "pleural effusion": PE,
    "pneumothorax": PTX,
    "consolidation": CO,
    "nodule": LL,
}


def test_mapping_covers_every_phantom_finding():
    assert set(OBSERVATION_OF) == set(phantom.FINDINGS)


@pytest.mark.parametrize("name", phantom.FINDINGS)
def test_every_phantom_finding_sentence(name):
    """Each template, each side and zone: the finding is positive; nothing else is, except the
    airspace opacity that one consolidation sentence names."""
    allowed = {OBSERVATION_OF[name]} | ({LO} if name == "consolidation" else set())
    for template in phantom.FINDING_SENTENCES[name]:
        for side in phantom.SIDES:
            for zone in phantom.ZONES:
                text = template.format(side=side, zone=zone)
                labels = label_report(text)
                assert labels[OBSERVATION_OF[name]] == 1, text
                assert {o for o, v in labels.items() if v in (1, -1)} <= allowed, text


@pytest.mark.parametrize(
    "sentences,negative",
    [
        (phantom.NORMAL_HEART, {CM}),
        (phantom.CLEAR_LUNGS, {CO}),
        (phantom.NO_PLEURAL, {PE, PTX}),
        (phantom.NO_EFFUSION, {PE}),
        (phantom.NO_PNEUMOTHORAX, {PTX}),
        (phantom.BONES, {FR}),
        (phantom.NORMAL_IMPRESSIONS, set()),
    ],
)
def test_every_phantom_normal_sentence(sentences, negative):
    for text in sentences:
        labels = label_report(text)
        assert all(labels[o] == 0 for o in negative), text
        assert labels[NF] == 1, text  # nothing positive or uncertain


def _check_phantom_report(text: str, names: set[str], task: str) -> None:
    labels = label_report(text)
    for name, obs in OBSERVATION_OF.items():
        if name in names:
            assert labels[obs] == 1, (text, name)
        elif task == "report_findings" and name in ("cardiomegaly", "pleural effusion", "pneumothorax"):
            assert labels[obs] == 0, (text, name)  # the generator always states these when absent
    if task == "report_findings" and not names & {"consolidation", "nodule"}:
        assert labels[CO] == 0, text  # a clear-lungs sentence
    allowed = {OBSERVATION_OF[n] for n in names} | ({LO} if "consolidation" in names else set())
    assert {o for o, v in labels.items() if v in (1, -1) and o != NF} <= allowed, text
    assert labels[NF] == (None if names else 1), text


def test_phantom_dataset_reports_match_their_findings(tmp_path):
    """Reports written by data_prep.phantom.generate, checked against each record's meta findings."""
    phantom.generate(40, tmp_path, seed=0, size=112, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    reports = [r for r in rows if r["task"] in ("report_findings", "report_impression")]
    assert len(reports) == 80
    for r in reports:
        _check_phantom_report(r["answer"], {f["name"] for f in r["meta"]["findings"]}, r["task"])


def test_phantom_text_generator_at_scale():
    """1,500 planned studies (no images): findings and impression as study_records writes them."""
    keep = [o for o in CHEXPERT_OBSERVATIONS if o != LO]
    texts = []
    for study in phantom.plan_studies(1500, seed=3):
        rng = np.random.default_rng(study.text_seed)
        findings, impression = (
            phantom.findings_report(study.findings, rng),
            phantom.impression(study.findings, rng),
        )
        names = {f.name for f in study.findings}
        _check_phantom_report(findings, names, "report_findings")
        _check_phantom_report(impression, names, "report_impression")
        # the findings section and the impression of one study name the same observations
        assert label_agreement(findings, impression, observations=keep) == 1.0, (findings, impression)
        texts += [findings, impression]
    assert label_f1(texts, texts)["micro_f1_14"] == 1.0

    unique = list(dict.fromkeys(texts))
    rl._label_tuple.cache_clear()  # time the rules, not the cache
    start = time.perf_counter()
    label_reports(unique)
    rate = len(unique) / (time.perf_counter() - start)
    print(f"report_labels: {rate:,.0f} reports/s uncached ({len(unique)} phantom reports)")
    assert rate > 300  # catastrophic backtracking would be far below; ~7,000/s measured on a busy core
