"""Generation, resume, comparison and gallery with the tiny Qwen2.5-VL on phantom data (CPU)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep.io import read_records
from evaluation import generation, run
from evaluation.compare import compare
from evaluation.compare import main as compare_main
from evaluation.gallery import CITED_COLOR, GT_COLOR

FAST = {"meteor": False, "model_metrics": False, "n_boot": 50, "max_new_tokens": 12, "progress": False}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from demo.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("eval_model") / "tiny"))


@pytest.fixture(scope="session")
def phantom(tmp_path_factory):
    from data_prep.phantom import generate

    out = tmp_path_factory.mktemp("eval_data") / "phantom"
    generate(40, out, seed=0, size=224, progress=False)
    return str(out)


@pytest.fixture(scope="session")
def base_run(tiny_model, phantom, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_runs") / "base"
    results = run.evaluate(tiny_model, phantom, str(out), limit=10, batch_size=4, gallery=6, **FAST)
    return out, results


def perfect_completion(rec: dict) -> str:
    box = rec["boxes"][0]["box"] if rec["boxes"] else [20, 30, 120, 140]
    cite = "[" + ", ".join(str(int(v)) for v in box) + "]"
    return f"<think> the finding is at {cite} </think>. The answer is: \\boxed{{{rec['answer']}}}"


@pytest.fixture(scope="session")
def perfect_run(base_run, phantom, tmp_path_factory):
    """Predictions written from the ground truth, scored with --metrics-only."""
    out = tmp_path_factory.mktemp("eval_runs") / "perfect"
    out.mkdir(exist_ok=True)
    recs = read_records(phantom, split="test")[:10]
    lines = [json.dumps({"id": r["id"], "completion": perfect_completion(r)}) for r in recs]
    (out / run.PREDICTIONS).write_text("\n".join(lines) + "\n")
    run.main(
        [
            "--data",
            phantom,
            "--out",
            str(out),
            "--limit",
            "10",
            "--metrics_only",
            "--name",
            "oracle",
            "--no_meteor",
            "--no_model_metrics",
            "--bootstrap",
            "50",
            "--gallery",
            "6",
        ]
    )
    return out


def test_evaluate_writes_everything(base_run):
    out, results = base_run
    assert results["n"] == 10 and results["timing"]["generated"] == 10
    preds = run.load_predictions(out / run.PREDICTIONS)
    assert len(preds) == 10 and all(isinstance(v, str) for v in preds.values())
    on_disk = json.loads((out / run.RESULTS).read_text())
    assert on_disk["headline"] == results["headline"]
    assert on_disk["run"]["reasoning"] is True and on_disk["run"]["decoding"] == "greedy"
    for key in ("reasoning/format_rate", "reasoning/boxes_per_answer", "answers/boxed_rate"):
        h = results["headline"][key]
        assert h["ci_low"] <= h["value"] <= h["ci_high"]
    assert len((out / run.PER_SAMPLE).read_text().splitlines()) == 10
    assert (out / run.GALLERY).exists()


def test_resume_generates_only_missing_ids(base_run, tiny_model, phantom, tmp_path, monkeypatch):
    _, first = base_run
    recs = read_records(phantom, split="test")[:10]
    out = tmp_path / "resumed"
    out.mkdir()
    done = {r["id"]: f"KEEP {i}" for i, r in enumerate(recs[:4])}
    lines = [json.dumps({"id": k, "completion": v}) for k, v in done.items()]
    # the process was killed in the middle of writing the fifth line
    (out / run.PREDICTIONS).write_text("\n".join(lines) + '\n{"id": "' + recs[4]["id"] + '", "compl')
    asked: list[str] = []
    original = generation.TransformersGenerator.generate

    def spy(self, records, reasoning):
        asked.extend(r["id"] for r in records)
        return original(self, records, reasoning)

    monkeypatch.setattr(generation.TransformersGenerator, "generate", spy)
    results = run.evaluate(tiny_model, phantom, str(out), limit=10, batch_size=4, gallery=0, **FAST)
    assert asked == [r["id"] for r in recs[4:]]
    assert results["timing"]["resumed"] == 4 and results["timing"]["generated"] == 6
    preds = run.load_predictions(out / run.PREDICTIONS)
    assert len(preds) == 10 and all(preds[k] == v for k, v in done.items())
    assert all(json.loads(line) for line in (out / run.PREDICTIONS).read_text().splitlines())
    # greedy decoding: the regenerated ids match the uninterrupted run
    base = run.load_predictions(base_run[0] / run.PREDICTIONS)
    assert all(preds[r["id"]] == base[r["id"]] for r in recs[4:])
    # a third run has nothing left to generate
    asked.clear()
    again = run.evaluate(tiny_model, phantom, str(out), limit=10, batch_size=4, gallery=0, **FAST)
    assert asked == [] and again["timing"]["generated"] == 0
    assert again["headline"] == results["headline"]


def test_rerun_with_other_settings_refuses(base_run, tiny_model, phantom):
    out, _ = base_run
    with pytest.raises(run.RunError, match="max_new_tokens"):
        run.evaluate(tiny_model, phantom, str(out), limit=10, **{**FAST, "max_new_tokens": 99})
    # the command exits with that one line, no traceback
    args = [
        "--model",
        tiny_model,
        "--data",
        phantom,
        "--out",
        str(out),
        "--limit",
        "10",
        "--max_new_tokens",
        "99",
    ]
    with pytest.raises(
        SystemExit, match=r"^evaluation.run: \S+ holds predictions made with other settings \("
    ) as e:
        run.main(args)
    assert "\n" not in str(e.value)


def test_options_mirror_the_flags():
    """Every flag but --model/--data/--out lands in the EvalOptions field of its name."""
    args = run.build_parser().parse_args(
        [
            "--data",
            "d",
            "--out",
            "o",
            "--bootstrap",
            "7",
            "--family",
            "qwen3-vl",
            "--no_meteor",
            "--no_reasoning",
        ]
    )
    opts = run.options_from_args(args)
    assert (opts.n_boot, opts.family_name, opts.meteor, opts.reasoning) == (7, "qwen3-vl", False, False)
    assert (
        run.options_from_args(run.build_parser().parse_args(["--data", "d", "--out", "o"]))
        == run.EvalOptions()
    )
    with pytest.raises(TypeError, match="no_such_option"):
        run.evaluate(None, "d", "o", no_such_option=1)


def test_vllm_backend_without_vllm_says_so(phantom, tiny_model, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(generation.BackendUnavailableError, match="needs vLLM"):
        run.evaluate(tiny_model, phantom, str(tmp_path / "v"), limit=2, backend="vllm", **FAST)


def test_perfect_predictions_score_one(perfect_run):
    results = json.loads((perfect_run / run.RESULTS).read_text())
    assert results["run"]["name"] == "oracle"
    h = results["headline"]
    for key in (
        "vqa/accuracy",
        "report/rouge_l",
        "classification/micro_f1",
        "grounding/map50",
        "reasoning/format_rate",
        "reasoning/valid_box_rate",
    ):
        if key in h:
            assert h[key]["value"] == pytest.approx(1.0), key


def test_compare_table_plots_and_gallery(base_run, perfect_run, tmp_path, capsys):
    out = tmp_path / "cmp"
    md = compare({"tiny": str(base_run[0]), "oracle": str(perfect_run)}, out, paper=True, gallery=5)
    header = md.splitlines()[2]
    assert header == "| metric | tiny | oracle | DeepMedix-R1 (paper) |"
    assert "| Reasoning format rate | " in md and "**1.000**" in md
    assert "| VQA accuracy |" in md and "0.690" in md  # the paper's number
    assert (out / "comparison.md").read_text() == md
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert {r["metric"] for r in rows} >= {"reasoning/format_rate", "answers/boxed_rate"}
    with Image.open(out / "headline_metrics.png") as im:
        assert im.format == "PNG" and im.width > 400
    assert (out / "gallery.html").exists()
    compare_main(["--runs", f"tiny={base_run[0]}", "--out", str(tmp_path / "cmp2"), "--gallery", "0"])
    assert "| metric | tiny |" in capsys.readouterr().out


class GalleryParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cards, self.svgs, self.uses, self.rects = 0, 0, [], []
        self.images, self.urls, self.legend = {}, [], False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and "card" in (a.get("class") or ""):
            self.cards += 1
        if tag == "svg" and "fig" in (a.get("class") or ""):
            self.svgs += 1
        if tag == "use":
            self.uses.append(a["href"].lstrip("#"))
        if tag == "image":
            self.images[a["id"]] = a["href"]
        if tag == "rect" and a.get("class"):
            self.rects.append(a["class"])
        if tag == "div" and a.get("class") == "legend":
            self.legend = True
        for k in ("src", "href"):
            if (a.get(k) or "").startswith(("http:", "https:", "//")):
                self.urls.append(a[k])


def test_gallery_structure(base_run, perfect_run, tmp_path):
    from evaluation.gallery import gallery_for_runs

    path = gallery_for_runs({"tiny": str(base_run[0]), "oracle": str(perfect_run)}, tmp_path / "g.html", n=6)
    p = GalleryParser()
    p.feed(path.read_text())
    assert p.legend and p.cards == 6
    assert p.svgs == 12  # one figure per run per sample
    assert set(p.uses) <= set(p.images) and len(p.images) == 6
    for uri in p.images.values():
        assert uri.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
            assert im.size == (224, 224)
    assert "cited" in p.rects  # the oracle cites boxes
    assert p.urls == []  # self-contained: nothing from the network
    # every sample is on both sides, in the same order
    assert path.read_text().count('<div class="run"><h3>oracle</h3>') == 6


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="needs chromium (apt-get install -y chromium)")
def test_gallery_renders_in_headless_chromium(perfect_run, tmp_path):
    """The oracle's gallery in a real browser: ground-truth (green) and cited (red) boxes are drawn."""
    from evaluation.gallery import gallery_for_runs

    page = gallery_for_runs({"oracle": str(perfect_run)}, tmp_path / "g.html", n=3)
    shot = tmp_path / "shot.png"
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'prof'}",
        "--window-size=1000,1400",
        f"--screenshot={shot}",
        page.as_uri(),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    with Image.open(shot) as im:
        pixels = {tuple(px) for px in np.asarray(im.convert("RGB")).reshape(-1, 3).tolist()}

    def near(hex_color, tol=40):
        target = tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
        return any(all(abs(c - t) <= tol for c, t in zip(px, target)) for px in pixels)

    assert near(GT_COLOR) and near(CITED_COLOR)
    # and the X-ray itself: many grey levels
    assert len({px for px in pixels if px[0] == px[1] == px[2]}) > 50


def test_cli_help_mentions_every_option():
    out = subprocess.run(
        [sys.executable, "-m", "evaluation.run", "--help"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
    ).stdout
    for opt in (
        "--model",
        "--data",
        "--split",
        "--out",
        "--limit",
        "--batch_size",
        "--backend",
        "--reasoning",
        "--no_reasoning",
        "--max_new_tokens",
        "--metrics_only",
        "--no_meteor",
        "--no_model_metrics",
        "--name",
    ):
        assert opt in out
