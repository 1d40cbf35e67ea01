"""ReXrank's report metrics through radeval, run inside the metric environment (.venv-metrics).

    .venv-metrics/bin/python evaluation/rexrank_worker.py --input in.json --output out.json
    .venv-metrics/bin/python evaluation/rexrank_worker.py --fetch      # `make fetch-metric-weights`

Run as a script by ``evaluation.rexrank`` (it imports radeval, torch and numpy only, never the
project: the training stack is not installed here). Importing it imports the standard library only,
so ``evaluation.rexrank`` reads ``METRICS`` from here. in.json: {"refs": [...], "hyps": [...],
"metrics": [...]}. out.json: per metric either {"per_sample": [...]} (one score per report, for the
study-clustered intervals), {"hyp_labels": [[0/1 x 14]], "ref_labels": [...], "names": [...]} for the
CheXbert labels, or {"status": "skipped", "reason": ..., "command": ...}. One metric failing never
stops the others.

Weights are read from the caches the packages use: the Hugging Face hub cache ($HF_HOME: the BERT
models, RaTEScore's, GREEN's), appdirs' cache ($XDG_CACHE_HOME, default ~/.cache: chexbert/ holds
chexbert.pth, radgraph/ the RadGraph model) and nltk's punkt_tab (~/nltk_data, or $NLTK_DATA). Unless
--fetch, the hub is forced offline and nltk's downloader refused first, so a missing model is an
error naming itself, never a download.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.util
import json
import os
import sys

FETCH = (
    "make fetch-metric-weights (once, with network; offline machines: copy $HF_HOME, ~/.cache/chexbert, "
    "~/.cache/radgraph and ~/nltk_data over and set HF_HOME / XDG_CACHE_HOME / NLTK_DATA)"
)
# name -> what it is; the order of `make eval`'s listing
METRICS = {
    "bleu2": "BLEU-2 (radeval's pycocoevalcap-style BLEU, n=2)",
    "bertscore": "BERTScore F1 (distilbert-base-uncased, layer 5)",
    "semb_score": "SembScore (cosine of CheXbert embeddings)",
    "radgraph_f1": "RadGraph F1 (partial, radgraph-xl)",
    "radcliq_v1": "RadCliQ-v1 (lower is better)",
    "ratescore": "RaTEScore",
    "green": "GREEN (7B judge)",
    "chexbert": "CheXbert labels (14 observations, uncertain = positive)",
}


class _RadEvalAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """radeval 2.2.1's vendored RadGraph (dygie) imports ``RadEval.metrics...``, the package's old name,
    so RadGraph F1 and RadCliQ-v1 fail with "No module named 'RadEval'" on a plain install. This maps
    ``RadEval.X`` onto the already-importable ``radeval.X`` (the same module objects, not copies)."""

    def find_spec(self, name, path=None, target=None):
        if name == "RadEval" or name.startswith("RadEval."):
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        return importlib.import_module("radeval" + spec.name[len("RadEval") :])

    def exec_module(self, module):
        pass


def skipped(reason: str, command: str = FETCH) -> dict:
    return {"status": "skipped", "reason": reason, "command": command}


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Scorers:
    """Each metric computed once; the CheXbert model loaded once for SembScore and the labels."""

    def __init__(self, refs: list[str], hyps: list[str]):
        self.refs, self.hyps = refs, hyps
        self._chexbert = None

    def chexbert_model(self):
        if self._chexbert is None:
            from radeval.metrics.f1chexbert import F1CheXbert

            self._chexbert = F1CheXbert(device=_device())
        return self._chexbert

    def bleu2(self) -> dict:
        from radeval.metrics.bleu.bleu import Bleu

        return {"per_sample": [float(x) for x in Bleu(n=2)(self.refs, self.hyps)[1]]}

    def bertscore(self) -> dict:
        from radeval.metrics._registry import get_metric_class

        return {
            "per_sample": get_metric_class("bertscore")().compute(self.refs, self.hyps, per_sample=True)[
                "bertscore"
            ]
        }

    def semb_score(self) -> dict:
        import numpy as np

        model = self.chexbert_model()
        ref, hyp = np.vstack(model.get_embeddings(self.refs)), np.vstack(model.get_embeddings(self.hyps))
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(hyp, axis=1)
        cos = np.where(norms > 0, np.einsum("nd,nd->n", ref, hyp) / np.maximum(norms, 1e-12), 0.0)
        return {"per_sample": np.clip(cos, -1.0, 1.0).astype(float).tolist()}

    def radgraph_f1(self) -> dict:
        from radeval.metrics._registry import get_metric_class

        out = get_metric_class("radgraph")().compute(self.refs, self.hyps, per_sample=True)
        return {"per_sample": [float(x) for x in out["radgraph_partial"]]}

    def radcliq_v1(self) -> dict:
        from radeval.metrics._registry import get_metric_class

        out = get_metric_class("radcliq")().compute(self.refs, self.hyps, per_sample=True)
        return {"per_sample": [float(x) for x in out["radcliq_v1"]]}

    def ratescore(self) -> dict:
        from radeval.metrics._registry import get_metric_class

        out = get_metric_class("ratescore")().compute(self.refs, self.hyps, per_sample=True)
        return {"per_sample": [float(x) for x in out["ratescore"]]}

    def green(self) -> dict:
        if _device() != "cuda":
            return skipped(
                "GREEN is a 7B judge model and runs only where a GPU is present",
                "make eval on a GPU machine, after make fetch-metric-weights",
            )
        from radeval.metrics._registry import get_metric_class

        out = get_metric_class("green")().compute(self.refs, self.hyps, per_sample=True)
        return {"per_sample": [float(x) for x in out["green"]]}

    def chexbert(self) -> dict:
        model = self.chexbert_model()
        return {
            "names": list(model.TARGET_NAMES),
            "hyp_labels": model.get_labels(self.hyps, mode="rrg"),
            "ref_labels": model.get_labels(self.refs, mode="rrg"),
        }


def compute(scorers: Scorers, name: str) -> dict:
    try:
        return getattr(scorers, name)()
    except Exception as e:  # noqa: BLE001 - one metric failing must not stop the others
        # OSError: hub offline / file missing (LocalEntryNotFoundError is one); others: a package or a
        # model that cannot load or run here. The message is the package's own, on one line.
        text = " ".join(str(e).split())[:300]
        return skipped(f"{METRICS[name]} could not load its model ({type(e).__name__}: {text})")


def force_offline() -> None:
    """The hub offline, and nltk's downloader refused: importing radeval calls
    ``nltk.download("punkt_tab")`` (radeval/utils.py), which would reach the network on every run."""
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[key] = "1"
    import nltk

    def refuse(info_or_id=None, *args, **kwargs) -> bool:
        print(
            f"nltk download of {info_or_id!r} refused (offline; make fetch-metric-weights caches it)",
            file=sys.stderr,
        )
        return False

    nltk.download = refuse


def fetch() -> int:
    """Load every model once with the hub online: the caches fill; prints what failed."""
    refs = hyps = ["No acute cardiopulmonary process."]
    scorers, failed = Scorers(refs, hyps), []
    for name in METRICS:
        if name == "green" and _device() != "cuda":
            print(f"{name}: skipped (needs a GPU; run this on the GPU machine to cache it)")
            continue
        out = compute(scorers, name)
        print(f"{name}: {'cached' if 'status' not in out else out['reason']}")
        failed += [name] if "status" in out else []
    return 1 if failed else 0


def main() -> int:
    sys.meta_path.append(_RadEvalAlias())  # before anything imports radeval's RadGraph
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input")
    ap.add_argument("--output")
    ap.add_argument("--fetch", action="store_true", help="download every metric's weights into the caches")
    args = ap.parse_args()
    if args.fetch:
        import nltk

        nltk.download("punkt_tab", quiet=True)
        return fetch()
    force_offline()
    job = json.load(open(args.input))
    scorers = Scorers(job["refs"], job["hyps"])
    out = {name: compute(scorers, name) for name in job.get("metrics", list(METRICS))}
    tmp = f"{args.output}.tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
