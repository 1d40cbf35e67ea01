"""ReXrank's report metrics (evaluation/rexrank.py) through the metric environment (.venv-metrics).

The worker runs in the real metric environment that `make install-metrics` builds (radeval 2.2.1);
`make test` builds it first. Real weights are not reachable offline, so:
* with empty caches every model-based metric must say which model is missing and which command
  fixes it, and BLEU-2 (no weights) is computed;
* stand-in weights, built here in the layouts the packages read (the Hugging Face hub cache for
  bert-base-uncased and distilbert-base-uncased, radeval's appdirs cache for chexbert.pth), run
  radeval's real loading code for CheXbert labels, SembScore and BERTScore.
Not stood in, and why: RadGraph (radgraph-xl is an AllenNLP archive with its own vocabulary files),
RadCliQ-v1 (needs RadGraph), RaTEScore (two fine-tuned models plus medspacy's pipeline) and GREEN
(a 7B judge, GPU only). Those are checked only for their "not computed" message here.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from evaluation import rexrank
from evaluation.run import summary_lines

REFS = [
    "Mild cardiomegaly. Small left pleural effusion.",
    "No acute cardiopulmonary process.",
    "Right pneumothorax.",
]
HYPS = ["Mild cardiomegaly. Small left pleural effusion.", "The lungs are clear.", "No pneumothorax."]
REVISION = "0" * 40
VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    *sorted({w.strip(".").lower() for t in REFS + HYPS for w in t.split()}),
    ".",
]


def hub_snapshot(cache: os.PathLike, repo: str):
    """A folder in the Hugging Face hub cache layout for ``repo`` at REVISION (refs/main points there)."""
    from pathlib import Path

    root = Path(cache) / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(REVISION)
    snap = root / "snapshots" / REVISION
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def tiny_bert(snap, model_type: str) -> None:
    """A 5-layer, 32-wide stand-in for bert-base-uncased / distilbert-base-uncased, with a word vocabulary."""
    from transformers import BertConfig, BertTokenizer, DistilBertConfig, DistilBertModel

    (snap / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tok = BertTokenizer(str(snap / "vocab.txt"), do_lower_case=True, model_max_length=512)
    if model_type == "bert":
        config = BertConfig(
            vocab_size=len(VOCAB),
            hidden_size=32,
            num_hidden_layers=5,
            num_attention_heads=2,
            intermediate_size=64,
        )
        config.save_pretrained(snap)
    else:
        config = DistilBertConfig(vocab_size=len(VOCAB), dim=32, n_layers=5, n_heads=2, hidden_dim=64)
        torch.manual_seed(0)
        DistilBertModel(config).save_pretrained(snap)
    tok.save_pretrained(snap)


def chexbert_checkpoint(xdg_cache, bert_snap, texts=()) -> None:
    """chexbert.pth in radeval's cache (appdirs: $XDG_CACHE_HOME/chexbert), shaped for the stand-in BERT.
    A random BERT's [CLS] vectors barely differ between reports, so the heads are scaled to the spread
    of ``texts``' vectors: different reports then get different labels, and a decoding error shows."""
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    bert = BertModel(BertConfig.from_pretrained(bert_snap)).eval()
    state = {f"module.bert.{k}": v for k, v in bert.state_dict().items()}
    enc = BertTokenizer.from_pretrained(bert_snap)(
        list(texts) or REFS + HYPS, padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        cls = bert(**enc).last_hidden_state[:, 0]
    mean, spread = cls.mean(0), cls.std(0) + 1e-6
    for i in range(14):
        weight = torch.randn(4 if i < 13 else 2, 32) / spread
        state[f"module.linear_heads.{i}.weight"] = weight
        state[f"module.linear_heads.{i}.bias"] = -(weight @ mean)
    snap = hub_snapshot(xdg_cache / "chexbert", "StanfordAIMI/RRG_scorers")
    torch.save({"model_state_dict": state}, snap / "chexbert.pth")


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path


def test_without_weights_every_model_metric_says_what_is_missing_and_bleu2_is_computed(empty_caches):
    out = rexrank.rexrank_metrics(REFS, HYPS)
    assert list(out) == list(rexrank.REXRANK)
    bleu2 = out.pop("bleu2")["per_sample"]
    assert bleu2[0] == pytest.approx(1.0) and bleu2[1] < 0.5 and len(bleu2) == 3
    assert "GPU" in out.pop("green")["reason"]
    assert "RadEval" not in out["radgraph_f1"]["reason"]  # radeval 2.2.1's stale import name is mapped
    for name, entry in out.items():
        assert entry["status"] == "skipped", name
        assert (
            "could not load its model" in entry["reason"] and "make fetch-metric-weights" in entry["command"]
        ), name


def test_stand_in_weights_run_radevals_loading_code(empty_caches):
    hf_hub = empty_caches / "hf" / "hub"
    bert = hub_snapshot(hf_hub, "bert-base-uncased")
    tiny_bert(bert, "bert")
    tiny_bert(hub_snapshot(hf_hub, "distilbert-base-uncased"), "distilbert")
    chexbert_checkpoint(empty_caches / "xdg", bert)
    out = rexrank.rexrank_metrics(REFS, HYPS, metrics=("semb_score", "chexbert", "bertscore"))
    assert "status" not in out["semb_score"], out["semb_score"]
    semb = out["semb_score"]["per_sample"]
    assert semb[0] == pytest.approx(1.0, abs=1e-5) and all(
        -1 <= s <= 1 for s in semb
    )  # same text: same embedding
    labels = out["chexbert"]
    assert "status" not in labels, labels
    assert len(labels["names"]) == 14 and "No Finding" in labels["names"]
    assert labels["hyp_labels"][0] == labels["ref_labels"][0]  # same text, same labels
    assert all(set(row) <= {0, 1} and len(row) == 14 for row in labels["hyp_labels"])
    assert "status" not in out["bertscore"], out["bertscore"]
    assert out["bertscore"]["per_sample"][0] == pytest.approx(1.0, abs=1e-4)


def test_make_eval_lists_every_metric_as_a_number_or_not_computed(empty_caches, monkeypatch):
    from evaluation.scoring import score_run

    records = [
        {"id": f"r{i}", "task": "report_findings", "answer": ref, "study_id": f"s{i}", "patient_id": f"p{i}",
         "image": "x.png", "boxes": [], "width": 112, "height": 112, "question": "Findings?", "source": "phantom"}
        for i, ref in enumerate(REFS)
    ]  # fmt: skip
    completions = {r["id"]: f"\\boxed{{{h}}}" for r, h in zip(records, HYPS)}
    results, _, _ = score_run(records, completions, reasoning=False, meteor=False, n_boot=20)
    lines = "\n".join(summary_lines({**results, "run": {"name": "t"}}))
    assert "report/bleu2" in results["headline"]
    assert f"bleu2: report/bleu2 {results['headline']['report/bleu2']['value']:.4f}" in lines
    for name in ("bertscore", "semb_score", "radgraph_f1", "radcliq_v1", "ratescore", "chexbert"):
        assert f"{name}: not computed: " in lines and "make fetch-metric-weights" in lines, name
    assert "green: not computed: GREEN is a 7B judge model and runs only where a GPU is present" in lines

    monkeypatch.setattr(rexrank, "METRICS_PYTHON", empty_caches / "nowhere" / "python")
    results, _, _ = score_run(records, completions, reasoning=False, meteor=False, n_boot=20)
    status = results["report"]["rexrank"]
    assert all("make install-metrics" in s["command"] for s in status.values())
    json.dumps(results)  # results.json stays serialisable
