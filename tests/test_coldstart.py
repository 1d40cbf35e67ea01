"""Cold-start synthesis end to end: the real ``openai`` client over real HTTP against a local
OpenAI-compatible stub (tests/openai_stub_server.py) on 127.0.0.1; nothing leaves the machine."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from data_prep.frame import write_frame
from data_prep.io import read_records, resolve_image, write_jsonl
from data_prep.schema import make_record
from data_prep.synthesis import coldstart
from data_prep.synthesis.teacher import is_local_url, malformed_retry_wait
from rewards.parsing import format_box
from tests.openai_stub_server import Raw, Stall, Status, StubServer

REPO = Path(__file__).resolve().parents[1]
W, H = 112, 84
GT_BOX = [30, 20, 80, 70]
LUNG_BOX = [5, 5, 50, 80]
REMOTE = "https://api.example.invalid/v1"  # never contacted: refused or dry run


def make_dataset(root: Path, n: int, source: str = "phantom") -> list[dict]:
    """n records over small PNGs; even ids are 'yes' with a gt box, odd ids 'no' without."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        Image.new("L", (W, H), color=40 + i).save(root / "images" / f"img{i}.png")
        yes = i % 2 == 0
        records.append(
            make_record(
                id=f"case-{i}",
                source=source,
                task="vqa",
                question=f"Case {i}: is there cardiomegaly?",
                answer="yes" if yes else "no",
                boxes=[{"label": "cardiomegaly", "box": GT_BOX}] if yes else [],
                image=f"images/img{i}.png",
                width=W,
                height=H,
                patient_id=f"p{i}",
                study_id=f"s{i}",
                split="train",
                meta={"question_type": "presence"},
            )
        )
    write_jsonl(root / "records.jsonl", records)
    write_frame(root, min_pixels=3136, max_pixels=W * H)
    return records


def case_of(req) -> int:
    return int(re.search(r"Case (\d+):", req.text).group(1))


def good_reply(i: int) -> str:
    if i % 2 == 0:
        return f"<think> The cardiac silhouette {format_box(GT_BOX)} is enlarged. </think>. The answer is: \\boxed{{yes}}"
    return f"<think> The heart is normal; the right lung {format_box(LUNG_BOX)} is clear. </think>. The answer is: \\boxed{{no}}"


def good(req, stub):
    return good_reply(case_of(req))


def run(data: Path, out: Path, url: str, *extra: str) -> int:
    args = ["--data", str(data), "--out", str(out), "--teacher", "openai", "--base_url", url]
    if "--model" not in extra:
        args += ["--model", "stub-teacher"]
    return coldstart.main([*args, *extra])


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def ledger(out: Path) -> dict:
    return json.loads((out / "ledger.json").read_text())


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


def test_normal_run_writes_a_dataset_and_a_rerun_sends_nothing(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    records = make_dataset(data, 6)
    with StubServer(good, api_key="sk-test") as stub:
        rc = run(data, out, stub.base_url, "--concurrency", "3", "--price_in", "2", "--price_out", "8")
        assert rc == 0
        assert stub.problems == []  # every request carried a decodable image data URL
        assert len(stub.requests) == 6
        req = stub.requests_for("Case 0:")[0]
        assert req.model == "stub-teacher" and req.headers["authorization"] == "Bearer sk-test"
        assert "Correct answer: yes" in req.text and format_box(GT_BOX) in req.text
        assert f"{W} x {H}" in req.text
        assert req.images[0].size == (W, H)

        kept = read_records(out, "train")  # OUT is a dataset folder: validated records
        assert [r["id"] for r in kept] == [r["id"] for r in records]
        for r in kept:
            assert r["reasoning"] and "<think>" not in r["reasoning"] and "boxed" not in r["reasoning"]
            assert r["meta"]["teacher"] == "stub-teacher" and r["meta"]["question_type"] == "presence"
            assert resolve_image(out, r["image"]).exists()
        assert kept[0]["reasoning"] == f"The cardiac silhouette {format_box(GT_BOX)} is enlarged."
        frame = json.loads((out / "frame.json").read_text())
        # the source's frame, plus its folder as an image root: the kept records point at its images
        assert frame.pop("image_roots") == [str(data.resolve())]
        assert frame == json.loads((data / "frame.json").read_text())

        led = ledger(out)
        assert (led["read"], led["written"], led["rejected"], led["failed"]) == (6, 6, 0, 0)
        usage = led["teacher_usage"]
        assert (usage["prompt_tokens"], usage["completion_tokens"], usage["requests"]) == (6000, 600, 6)
        assert led["estimated_cost_usd"] == pytest.approx((6000 * 2 + 600 * 8) / 1e6)

        assert run(data, out, stub.base_url) == 0  # resume: everything is done already
        assert len(stub.requests) == 6
        assert ledger(out)["already_kept"] == 6
        assert len(lines(out / "coldstart.jsonl")) == 6


def test_429_500_and_timeouts_are_retried_honouring_retry_after(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    make_dataset(data, 3)
    script = {
        0: [Stall(3.0)],
        1: [Status(429, headers={"Retry-After": "1.2"}), Status(500)],
        2: [Status(503)],
    }

    def respond(req, stub):
        i = case_of(req)
        return script[i].pop(0) if script[i] else good_reply(i)

    with StubServer(respond) as stub:
        assert run(data, out, stub.base_url, "--timeout", "0.5") == 0
        assert len(lines(out / "records.jsonl")) == 3
        # one retry per failure (the openai client's), each visible to the server
        assert [len(stub.requests_for(f"Case {i}:")) for i in range(3)] == [2, 3, 2]
        first, second = stub.requests_for("Case 1:")[:2]
        assert second.time - first.time >= 1.15  # Retry-After honoured (a first backoff alone is <= 0.5 s)
        usage = ledger(out)["teacher_usage"]
        assert usage["retries"] == 4
        assert usage["retries after HTTP 429"] == 1 and usage["retries after timeout"] == 1


def test_requests_that_keep_failing_are_not_rejects_and_a_rerun_retries_them(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    make_dataset(data, 4)
    with StubServer(lambda req, stub: Status(502, "bad gateway")) as stub:
        assert run(data, out, stub.base_url, "--limit", "2", "--max_retries", "1") == 1
        assert len(stub.requests) == 4  # 2 records x (1 try + 1 retry)
    led = ledger(out)
    assert (led["read"], led["failed"], led["failed_by_reason"]) == (2, 2, {"HTTP 502": 2})
    assert lines(out / "rejects.jsonl") == [] and lines(out / "records.jsonl") == []
    with StubServer(good) as stub:
        assert run(data, out, stub.base_url, "--limit", "2") == 0
    assert [r["id"] for r in lines(out / "records.jsonl")] == ["case-0", "case-1"]


def test_malformed_reply_backoff_doubles_up_to_8_seconds_with_jitter():
    for retry in range(8):
        wait = min(8.0, 0.5 * 2**retry)
        assert 0.75 * wait <= malformed_retry_wait(retry) <= wait


@pytest.mark.parametrize(
    ("status", "words"), [(401, ["wrong", "STUB_KEY", "401"]), (403, ["lacks access", "STUB_KEY", "403"])]
)
def test_auth_errors_stop_the_run_naming_the_key_variable(tmp_path, monkeypatch, status, words):
    data, out = tmp_path / "data", tmp_path / "out"
    make_dataset(data, 5)
    monkeypatch.setenv("STUB_KEY", "sk-wrong")
    with StubServer(lambda req, stub: Status(status, "Incorrect API key provided.")) as stub:
        with pytest.raises(SystemExit) as stop:
            run(data, out, stub.base_url, "--api_key_env", "STUB_KEY", "--concurrency", "1")
        assert len(stub.requests) == 1  # nothing more is sent after the first refusal
    message = str(stop.value.code)
    assert all(w in message for w in words), message
    assert "stopped" in ledger(out) and lines(out / "coldstart.jsonl") == lines(out / "rejects.jsonl") == []


MALFORMED = {
    0: ("The answer is: \\boxed{yes}", "format: not exactly one <think> block at the start"),
    1: ("<think> a [1, 2, 3, 4] </think> <think> b </think>. \\boxed{no}", "format: not exactly one <think>"),
    2: (
        f"<think> heart {format_box(GT_BOX)} </think>. The answer is yes",
        "format: no single \\boxed{} answer",
    ),
    3: ("<think> heart [30, 20, 200, 70] </think>. The answer is: \\boxed{yes}", "box: invalid"),
    4: ("<think> right lung [50, 5, 5, 80] </think>. The answer is: \\boxed{no}", "box: invalid"),
    5: ("<think> The heart is big. </think>. The answer is: \\boxed{yes}", "box: none cited"),
    6: (f"<think> heart {format_box(GT_BOX)} </think>. The answer is: \\boxed{{no}}", "answer: disagrees"),
    7: ("<think> heart [30, 20, 80] </think>. The answer is: \\boxed{no}", "box: invalid"),
    8: ("", "format: not exactly one <think> block at the start"),
    9: ("<think>   </think>. The answer is: \\boxed{no}", "format: fails the grounded format reward"),
}


def test_malformed_teacher_output_is_rejected_with_its_reason(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    make_dataset(data, 12)
    replies = {i: text for i, (text, _) in MALFORMED.items()}
    with StubServer(lambda req, stub: replies.get(case_of(req), good_reply(case_of(req)))) as stub:
        assert run(data, out, stub.base_url) == 0
        assert stub.problems == []
    rejects = {r["id"]: r for r in lines(out / "rejects.jsonl")}
    assert set(rejects) == {f"case-{i}" for i in MALFORMED}
    for i, (text, reason) in MALFORMED.items():
        assert rejects[f"case-{i}"]["reason"].startswith(reason), (i, rejects[f"case-{i}"])
        assert rejects[f"case-{i}"]["completion"] == text
    assert [r["id"] for r in lines(out / "records.jsonl")] == ["case-10", "case-11"]
    led = ledger(out)
    assert (led["written"], led["rejected"]) == (2, 10)
    assert led["rejected_by_reason"]["box: invalid"] == 3


def test_reasoning_boxes_are_written_canonically():
    rec = {"width": W, "height": H, "answer": "Yes", "task": "vqa"}
    text = "<think> heart [ 30.4,20 , 79.6, 70.0 ]. </think>. The answer is: \\boxed{yes.}"
    assert coldstart.check_completion(rec, text) == "heart [30, 20, 80, 70]."


def test_a_copied_short_report_agrees():  # rewards' BLEU-4 of a one-word text is < 1
    rec = {"width": W, "height": H, "answer": "Cardiomegaly.", "task": "report_impression"}
    text = "<think> The heart [30, 20, 80, 70] is enlarged. </think>. The answer is: \\boxed{Cardiomegaly.}"
    assert coldstart.check_completion(rec, text)
    with pytest.raises(coldstart.Rejected, match="answer: disagrees"):
        coldstart.check_completion(rec, text.replace("Cardiomegaly.}", "Normal heart size.}"))


def test_judge_rejects_boxes_that_do_not_show_the_claim(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    make_dataset(data, 4)
    wrong = [0, 0, 20, 20]
    seen = []

    def respond(req, stub):
        if req.model == "stub-judge":
            box = json.loads(re.search(r"the box (\[[^\]]+\])", req.text).group(1))
            img = req.images[0].convert("RGB")
            seen.append(img.getpixel((box[0], (box[1] + box[3]) // 2)))  # left edge of the drawn box
            return "Yes." if box in (GT_BOX, LUNG_BOX) else "no"
        i = case_of(req)
        if i in (2, 3):  # valid in the frame, but not where the finding is
            return good_reply(i).replace(format_box(GT_BOX if i == 2 else LUNG_BOX), format_box(wrong))
        return good_reply(i)

    with StubServer(respond) as stub:
        args = ("--judge_base_url", stub.base_url, "--judge_model", "stub-judge")
        assert run(data, out, stub.base_url, *args) == 0
        assert stub.problems == []
    assert seen and all(px == (255, 0, 0) for px in seen)  # the judge saw the box drawn in red
    kept = lines(out / "records.jsonl")
    assert [r["id"] for r in kept] == ["case-0", "case-1"]
    assert all(r["meta"]["judge"] == "stub-judge" for r in kept)
    rejects = lines(out / "rejects.jsonl")
    assert {r["id"] for r in rejects} == {"case-2", "case-3"}
    assert all(r["reason"] == "judge: box does not show the claim" for r in rejects)
    assert ledger(out)["judge_usage"]["requests"] == 4


def test_a_killed_run_resumes_without_duplicates_or_losses(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    records = make_dataset(data, 12)
    bad = {3, 7}  # rejected, so the resume covers both files

    def reply(i):
        return "no think block" if i in bad else good_reply(i)

    answered = Counter()

    def stalling(req, stub):
        answered["n"] += 1
        return reply(case_of(req)) if answered["n"] <= 5 else Stall(60)

    with StubServer(stalling) as stub:
        cmd = [sys.executable, "-m", "data_prep.synthesis.coldstart", "--data", str(data), "--out", str(out)]
        cmd += [
            "--teacher",
            "openai",
            "--base_url",
            stub.base_url,
            "--model",
            "stub-teacher",
            "--concurrency",
            "2",
        ]
        proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ))
        deadline = time.time() + 20
        while time.time() < deadline:
            done = len(lines(out / "coldstart.jsonl")) + len(lines(out / "rejects.jsonl"))
            led = ledger(out) if (out / "ledger.json").exists() else {}
            if done >= 5 and len(stub.requests) >= 7 and led.get("written", 0) + led.get("rejected", 0) >= 5:
                break  # 5 answered (and in the ledger), 2 stalled in flight
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    assert done == 5
    led = ledger(out)  # written after every record: a killed run leaves one that adds up
    assert added_up(led) and (led["written"] + led["rejected"], led["unfinished"]) == (5, 7)
    assert led["stopped"].startswith("unfinished")
    with open(out / "coldstart.jsonl", "a") as f:  # as if killed in the middle of a write
        f.write('{"id": "case-1')

    with StubServer(lambda req, stub: reply(case_of(req))) as stub:
        assert run(data, out, stub.base_url) == 0
        assert len(stub.requests) == 12 - 5  # only what was missing was sent again
    kept, rejected = lines(out / "coldstart.jsonl"), lines(out / "rejects.jsonl")
    ids = Counter(r["id"] for r in kept + rejected)
    assert sorted(ids) == sorted(r["id"] for r in records) and set(ids.values()) == {1}
    assert {r["id"] for r in rejected} == {f"case-{i}" for i in bad}
    assert [r["id"] for r in lines(out / "records.jsonl")] == [
        r["id"] for r in records if int(r["id"][5:]) not in bad
    ]


def test_credentialed_data_is_not_sent_to_a_remote_endpoint(tmp_path, caplog):
    data, out = tmp_path / "data", tmp_path / "out"
    make_dataset(data, 2, source="mimic-cxr")
    with pytest.raises(SystemExit) as refused:
        run(data, out, REMOTE)
    message = str(refused.value.code)
    for words in ("coldstart: Refusing", "PhysioNet", "retain", "human review", "zero", "vllm serve",
                  "http://localhost:8000/v1", "--allow_remote_credentialed", "mimic-cxr: 2"):  # fmt: skip
        assert words in message, words
    assert not (out / "coldstart.jsonl").exists()

    # with the acknowledgement it goes ahead (a dry run here: nothing is sent anywhere)
    caplog.clear()
    assert run(data, out, REMOTE, "--allow_remote_credentialed", "--dry_run") == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("credentialed record(s) to the remote teacher endpoint" in w for w in warnings), warnings
    assert "Refusing" not in caplog.text

    # a remote judge is refused too, even with a local teacher
    with StubServer(good) as stub, pytest.raises(SystemExit) as refused:
        run(data, out, stub.base_url, "--judge_base_url", REMOTE, "--judge_model", "j")
    assert "judge endpoint" in str(refused.value.code) and not stub.requests

    # a local server is fine without any flag
    with StubServer(good) as stub:
        assert run(data, out, stub.base_url) == 0
    assert len(lines(out / "records.jsonl")) == 2


def test_is_local_url():
    for url in (
        "http://localhost:8000/v1",
        "http://127.0.0.1:8000/v1",
        "http://127.3.4.5/v1",
        "http://[::1]:80/v1",
    ):
        assert is_local_url(url), url
    for url in (
        "https://api.openai.com/v1",
        "http://10.0.0.2:8000/v1",
        "http://localhost.example.com/v1",
        REMOTE,
    ):
        assert not is_local_url(url), url


def test_dry_run_prints_the_request_and_sends_nothing(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "out"
    make_dataset(data, 2)
    with StubServer(good) as stub:
        assert run(data, out, stub.base_url, "--dry_run") == 0
        assert stub.requests == []
    request = json.loads(capsys.readouterr().out)
    assert request["model"] == "stub-teacher" and request["base_url"] == stub.base_url
    assert request["max_completion_tokens"] == 1024
    system, user = request["messages"]
    url = user["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,") and "more base64 characters" in url and len(url) < 200
    assert "Question: Case 0: is there cardiomegaly?" in user["content"][1]["text"]
    assert not (out / "coldstart.jsonl").exists()


def test_azure_openai_route_and_key_header(tmp_path, monkeypatch):
    data, out = tmp_path / "data", tmp_path / "out"
    make_dataset(data, 1)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "az-key")
    with StubServer(good, api_key="az-key") as stub:
        root = stub.base_url.removesuffix("/v1")
        assert run(data, out, root, "--azure_api_version", "2024-10-21", "--model", "my-gpt41") == 0
        (req,) = stub.requests
    assert req.path == "/openai/deployments/my-gpt41/chat/completions?api-version=2024-10-21"
    assert req.headers["api-key"] == "az-key"
    assert len(lines(out / "records.jsonl")) == 1


# ---------------------------------------------------------------- bad input

SECRET = b"SECRET-MARKER-7f3a9c do not send: root:x:0:0:root:/root:/bin/bash\n"


def never_sent(raw: bytes, content: bytes) -> bool:
    """No trace of ``content`` in a request body: not raw, not base64 at any of its 3 alignments."""
    marker = content[:40]
    encoded = [base64.b64encode(b"\0" * k + marker)[4:-4] for k in range(3)]
    return marker not in raw and base64.b64encode(content) not in raw and not any(e in raw for e in encoded)


def test_a_record_naming_a_file_outside_the_dataset_is_rejected_unread(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENMEDIX_IMAGE_ROOTS", raising=False)
    data, out = tmp_path / "data", tmp_path / "out"
    records = make_dataset(data, 5)
    secret = tmp_path / "private" / "passwd"
    secret.parent.mkdir()
    secret.write_bytes(SECRET * 20)
    (data / "images" / "innocent.png").symlink_to(secret)
    escapes = {
        "case-1": "../private/passwd",
        "case-2": str(secret),
        "case-3": "images/innocent.png",
        "case-4": ["images/img4.png", "images/../../private/passwd"],  # a second view
    }
    write_jsonl(data / "records.jsonl", [{**r, "image": escapes.get(r["id"], r["image"])} for r in records])

    with StubServer(good) as stub:
        assert run(data, out, stub.base_url, "--max_retries", "0") == 0
        assert [case_of(r) for r in stub.requests] == [0]  # only the honest record was sent
        assert all(never_sent(r.raw, secret.read_bytes()) for r in stub.requests)
        assert stub.problems == []
    rejects = {r["id"]: r for r in lines(out / "rejects.jsonl")}
    assert set(rejects) == set(escapes)
    for r in rejects.values():
        assert r["reason"] == "image outside the dataset folder" and r["completion"] == ""
        assert f"(id={r['id']!r})" in r["detail"] and "OPENMEDIX_IMAGE_ROOTS" in r["detail"]
    led = ledger(out)
    assert (led["read"], led["written"], led["rejected"]) == (5, 1, 4)
    assert led["rejected_by_reason"] == {"image outside the dataset folder": 4}
    assert [r["id"] for r in read_records(out)] == ["case-0"]


def added_up(led: dict) -> bool:
    parts = ("already_kept", "already_rejected", "written", "rejected", "failed", "unfinished")
    return led["read"] == sum(led[k] for k in parts)


MALFORMED_REPLIES = {
    1: Raw('{"id": "chatcmpl-1", "choices": [{"index": 0, "mess'),  # cut-off JSON
    2: Raw("<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),  # a proxy's page
    3: Raw({"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": [{"index": 0}]}),
    4: Raw({"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": []}),
}


def test_malformed_replies_are_failed_requests_retried_and_listed(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    make_dataset(data, 7)
    once = {5}  # a malformed reply, then a good one: the retry keeps it

    def respond(req, stub):
        i = case_of(req)
        if i in MALFORMED_REPLIES:
            return MALFORMED_REPLIES[i]
        if i in once:
            once.discard(i)
            return MALFORMED_REPLIES[3]
        return good_reply(i)

    with StubServer(respond) as stub:
        assert run(data, out, stub.base_url, "--max_retries", "1", "--concurrency", "2") == 1
        assert [len(stub.requests_for(f"Case {i}:")) for i in range(7)] == [1, 2, 2, 2, 2, 2, 1]
    led = ledger(out)
    assert (led["read"], led["written"], led["rejected"], led["failed"]) == (7, 3, 0, 4)
    assert led["failed_by_reason"] == {"malformed reply": 4}
    assert sorted(led["failed_ids"]) == ["case-1", "case-2", "case-3", "case-4"]
    assert added_up(led) and "stopped" not in led
    assert led["teacher_usage"]["retries after malformed reply"] == 5
    assert [r["id"] for r in lines(out / "records.jsonl")] == ["case-0", "case-5", "case-6"]
    assert lines(out / "rejects.jsonl") == []


def test_an_unexpected_error_stops_the_run_with_a_ledger_that_adds_up(tmp_path, monkeypatch):
    data, out = tmp_path / "data", tmp_path / "out"
    make_dataset(data, 6)
    check = coldstart.check_completion

    def buggy(record, text, finish_reason=None):  # a bug met only by one record's reply
        if record["id"] == "case-2":
            raise KeyError("surprise")
        return check(record, text, finish_reason)

    monkeypatch.setattr(coldstart, "check_completion", buggy)
    with StubServer(good) as stub, pytest.raises(SystemExit, match="unexpected KeyError on record 'case-2'"):
        run(data, out, stub.base_url, "--concurrency", "1")
    led = ledger(out)
    # case-3, already queued, may finish or be stopped; nothing after it is sent
    assert added_up(led) and led["failed_ids"][0] == "case-2" and led["unfinished"] >= 2
    assert led["failed_by_reason"]["unexpected error (KeyError)"] == 1
    assert not stub.requests_for("Case 4:") and not stub.requests_for("Case 5:")
    kept = [r["id"] for r in lines(out / "records.jsonl")]
    assert kept[:2] == ["case-0", "case-1"] and "case-2" not in kept and led["written"] == len(kept)
    assert "unexpected KeyError" in led["stopped"]
