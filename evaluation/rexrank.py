"""The field's report metrics (ReXrank's set, through radeval) for `make eval`, from a second venv.

ReXrank scores report generation with BLEU-2, BERTScore, SembScore, RadGraph F1, RadCliQ-v1,
RaTEScore and GREEN; the DeepMedix-R1 paper reports RadGraph F1 and CheXbert micro/macro F1 over
5 and 14 observations. radeval 2.2.1 bundles all of them, but its RaTEScore needs medspacy, whose
pins would take the training stack's numpy back to 1.26. So radeval lives in its own environment,
``.venv-metrics`` (`make install-metrics`), and this module runs ``evaluation/rexrank_worker.py``
there as a subprocess: report texts in, per-report scores (and CheXbert labels) out, so every metric
gets the study-clustered interval of every other headline metric.

Nothing downloads: the worker forces the hub offline. Weights come from `make fetch-metric-weights`
(run once where there is network); on an offline machine copy the caches over (the worker's
docstring says which). A metric that cannot run comes back as
``{"status": "skipped", "reason": ..., "command": ...}``, and `make eval` prints
"not computed: <reason>, <command>" for it. GREEN (a 7B judge) only runs where a GPU is present.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path

from evaluation.rexrank_worker import METRICS

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "rexrank_worker.py"
# The metric environment's python; OPENMEDIX_METRICS_PYTHON points elsewhere (a shared install).
METRICS_PYTHON = Path(os.environ.get("OPENMEDIX_METRICS_PYTHON", ROOT / ".venv-metrics" / "bin" / "python"))
# The metrics, in the order they are listed.
REXRANK = tuple(METRICS)
TIMEOUT_S = 6 * 3600  # a test split of thousands of reports on CPU takes hours for RadCliQ


def skipped(reason: str, command: str) -> dict:
    return {"status": "skipped", "reason": reason, "command": command}


def rexrank_metrics(refs: list[str], hyps: list[str], metrics=REXRANK, python: Path | None = None) -> dict:
    """{metric: {"per_sample": [...]} | {"hyp_labels", "ref_labels", "names"} | skipped dict}."""
    python = Path(python or METRICS_PYTHON)
    if not python.exists():
        reason = f"the metric environment is not installed ({python} is missing)"
        return {m: skipped(reason, "make install-metrics, then make fetch-metric-weights") for m in metrics}
    with tempfile.TemporaryDirectory(prefix="rexrank-") as tmp:
        job, out = Path(tmp) / "in.json", Path(tmp) / "out.json"
        job.write_text(json.dumps({"refs": list(refs), "hyps": list(hyps), "metrics": list(metrics)}))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        log.info("ReXrank metrics on %d reports in %s", len(refs), python.parent.parent.name)
        try:
            proc = subprocess.run(
                [str(python), str(WORKER), "--input", str(job), "--output", str(out)],
                env=env,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            return {
                m: skipped(f"the metric worker ran past {TIMEOUT_S} s", "rerun make eval") for m in metrics
            }
        if proc.returncode or not out.exists():
            tail = " ".join(proc.stderr.strip().splitlines()[-1:])[:300]
            reason = f"the metric worker failed (exit {proc.returncode}: {tail})"
            return {
                m: skipped(reason, "make install-metrics (a broken environment is rebuilt)") for m in metrics
            }
        return json.loads(out.read_text())
