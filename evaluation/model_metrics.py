"""Model-based report metrics: BERTScore, RadGraph F1, CheXbert F1 - only with local weights.

Each needs a package and model weights that are not part of the core install. Nothing is ever
downloaded here: every model is loaded with the Hugging Face hub forced offline, and a metric
whose package or weights are missing comes back as
``{"status": "skipped", "reason": ..., "how_to_enable": ...}`` instead of a number.

* BERTScore (``pip install bert-score``): F1 with ``distilroberta-base`` (layer 5, baseline
  rescaled when the package ships the baseline file), the setting of the CXR report metric
  papers. Another model: ``OPENMEDIX_BERTSCORE_MODEL=/path/to/local/model`` (or a hub id that is
  already in the local cache).
* RadGraph F1 (``pip install radgraph``): the "partial" reward level (entities and relations,
  the level papers report), mean over reports, model "radgraph".
* CheXbert F1 (``pip install f1chexbert``): CheXbert labels of generated and reference reports,
  14 observations and the usual 5 (Cardiomegaly, Edema, Consolidation, Atelectasis, Pleural
  Effusion), micro and macro F1. Uncertain counts as positive (the package's default "rrg"
  mode), as in the papers the reference numbers come from.

The weights go to the Hugging Face cache ($HF_HOME, default ~/.cache/huggingface): run the
"how_to_enable" command once on a machine with network, then copy that folder to offline
machines and point HF_HOME at it.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from pathlib import Path

import numpy as np

BERTSCORE_DEFAULT = "distilroberta-base"
HF_CACHE_NOTE = (
    "Weights are cached under $HF_HOME (default ~/.cache/huggingface); on an offline machine copy "
    "that folder over and set HF_HOME."
)
HOW_BERTSCORE = (
    'pip install bert-score; then, once with network: python -c "from transformers import AutoModel, '
    f"AutoTokenizer; AutoModel.from_pretrained('{BERTSCORE_DEFAULT}'); "
    f"AutoTokenizer.from_pretrained('{BERTSCORE_DEFAULT}')\" (or set OPENMEDIX_BERTSCORE_MODEL to a "
    f"local model folder). {HF_CACHE_NOTE}"
)
HOW_RADGRAPH = (
    'pip install radgraph; then, once with network: python -c "from radgraph import F1RadGraph; '
    "F1RadGraph(reward_level='partial', model_type='radgraph')\" (downloads from the Hugging Face "
    f"repo StanfordAIMI/RRG_scorers). {HF_CACHE_NOTE}"
)
HOW_CHEXBERT = (
    'pip install f1chexbert; then, once with network: python -c "from f1chexbert import F1CheXbert; '
    'F1CheXbert()" (downloads chexbert.pth from StanfordAIMI/RRG_scorers and bert-base-uncased). '
    f"{HF_CACHE_NOTE}"
)


def skipped(reason: str, how: str) -> dict:
    return {"status": "skipped", "reason": reason, "how_to_enable": how}


@contextlib.contextmanager
def hub_offline():
    """Force the Hugging Face hub offline (env vars and the already-imported constant)."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    saved_env = {k: os.environ.get(k) for k in keys}
    for k in keys:
        os.environ[k] = "1"
    constants = None
    try:
        import huggingface_hub.constants as constants

        saved_const = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True
    except ImportError:
        pass
    try:
        yield
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved_const


def _device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def _local_model(name: str) -> str | None:
    """A local folder for ``name``: the folder itself, or its snapshot in the local hub cache."""
    if Path(name).is_dir():
        return str(Path(name))
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    config = try_to_load_from_cache(name, "config.json")
    return str(Path(config).parent) if isinstance(config, str) else None


def bertscore(refs: list[str], hyps: list[str]) -> dict:
    try:
        import bert_score
    except ImportError:
        return skipped("package bert-score is not installed", HOW_BERTSCORE)
    name = os.environ.get("OPENMEDIX_BERTSCORE_MODEL", BERTSCORE_DEFAULT)
    local = _local_model(name)
    if local is None:
        return skipped(f"weights of '{name}' are not on this machine", HOW_BERTSCORE)
    base = Path(name.rstrip("/")).name
    num_layers = getattr(bert_score.utils, "model2layers", {}).get(base)
    if num_layers is None:
        import json

        num_layers = json.loads((Path(local) / "config.json").read_text()).get("num_hidden_layers")
    baseline = Path(bert_score.__file__).parent / "rescale_baseline" / "en" / f"{base}.tsv"
    rescale = baseline.exists()
    try:
        with hub_offline():
            _, _, f1 = bert_score.score(
                hyps,
                refs,
                model_type=local,
                num_layers=num_layers,
                lang="en",
                rescale_with_baseline=rescale,
                baseline_path=str(baseline) if rescale else None,
                device=_device(),
                verbose=False,
            )
    except Exception as e:
        return skipped(f"BERTScore could not run offline ({type(e).__name__}: {e})", HOW_BERTSCORE)
    per = f1.numpy().astype(float)
    out = {"value": float(per.mean()), "n": len(per), "per_sample": per}
    out.update({"model": name, "num_layers": num_layers, "rescaled_with_baseline": rescale})
    return out


def radgraph_f1(refs: list[str], hyps: list[str]) -> dict:
    try:
        from radgraph import F1RadGraph
    except ImportError:
        return skipped("package radgraph is not installed", HOW_RADGRAPH)
    kwargs = {"reward_level": "partial"}
    if "model_type" in inspect.signature(F1RadGraph.__init__).parameters:
        kwargs["model_type"] = "radgraph"
    try:
        with hub_offline():
            scorer = F1RadGraph(**kwargs)
            _, rewards, _, _ = scorer(hyps=hyps, refs=refs)
    except Exception as e:
        return skipped(f"RadGraph weights are not available offline ({type(e).__name__}: {e})", HOW_RADGRAPH)
    per = np.array([r[-1] if isinstance(r, (tuple, list)) else r for r in rewards], dtype=float)
    out = {"value": float(per.mean()), "n": len(per), "per_sample": per}
    out.update({"reward_level": "partial", "model_type": kwargs.get("model_type", "package default")})
    return out


def chexbert_f1(refs: list[str], hyps: list[str]) -> dict:
    try:
        from f1chexbert import F1CheXbert
    except ImportError:
        return skipped("package f1chexbert is not installed", HOW_CHEXBERT)
    try:
        with hub_offline():
            scorer = F1CheXbert(device=_device())
            accuracy, _, cr14, cr5 = scorer(hyps=hyps, refs=refs)
    except Exception as e:
        return skipped(f"CheXbert weights are not available offline ({type(e).__name__}: {e})", HOW_CHEXBERT)

    def f1(report, avg):
        return float(report[avg]["f1-score"])

    return {
        "micro_f1_14": f1(cr14, "micro avg"),
        "macro_f1_14": f1(cr14, "macro avg"),
        "micro_f1_5": f1(cr5, "micro avg"),
        "macro_f1_5": f1(cr5, "macro avg"),
        "accuracy_5": float(accuracy),
        "n": len(refs),
        "uncertain": "counted as positive (f1chexbert 'rrg' mode)",
    }


def clinical_metrics(refs: list[str], hyps: list[str]) -> dict:
    """All three, each a number dict (BERTScore and RadGraph with their ``per_sample`` scores, which
    evaluation.scoring resamples) or a "skipped" dict."""
    return {
        "bertscore_f1": bertscore(refs, hyps),
        "radgraph_f1": radgraph_f1(refs, hyps),
        "chexbert": chexbert_f1(refs, hyps),
    }
