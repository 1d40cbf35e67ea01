"""The review app over HTTP (Starlette's test client): tokens, blinding, voting, data-use rules."""

from __future__ import annotations

import json
import re
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from evaluation.review import app as review_app
from evaluation.review import db
from evaluation.review.__main__ import main
from evaluation.review.app import create_app, serve
from evaluation.review.study import CRITERION_KEYS, StudyError, create_study
from tests.review_fixtures import (
    GOOD,
    PNG,
    POOR,
    RUNS,
    assignments,
    make_study,
    phantom,
    secrets_of,
    two_runs,
)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("review"), limit=5)


@pytest.fixture(scope="module")
def client(study):
    return TestClient(create_app(study[0]))


def test_wrong_or_missing_token_gets_403_and_no_image(study, client):
    folder, _, tokens = study
    item = assignments(folder, "alice")[0]["item_id"]
    good = client.get(f"/r/{tokens['alice']}/image/{item}/0")
    assert good.status_code == 200 and good.content.startswith(PNG)
    wrong = tokens["alice"][:-1] + ("A" if tokens["alice"][-1] != "A" else "B")
    for path in (
        f"/r/{wrong}",
        f"/r/{wrong}/image/{item}/0",
        f"/r/{'x' * 32}/image/{item}/0",
        f"/r/{wrong}/image/{item}/notanumber",
        f"/r/{wrong}?item=notanumber",
        f"/r//image/{item}/0",
        f"/image/{item}/0",
        "/",
        "/r/",
        "/docs",
        "/openapi.json",
    ):
        r = client.get(path)
        assert r.status_code == 403, path
        assert PNG not in r.content and r.headers["content-type"].startswith("text/html"), path
    r = client.post(f"/r/{wrong}/vote", content="item_id=" + item)
    assert r.status_code == 403
    with db.connect(db.study_db(folder)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == 0


def test_page_is_blind_and_shows_the_assigned_sides(study, client):
    folder, _, tokens = study
    never = secrets_of(study)
    for reviewer in ("alice", "bob"):
        for row in assignments(folder, reviewer):
            r = client.get(f"/r/{tokens[reviewer]}?item={row['position'] + 1}")
            assert r.status_code == 200
            page = r.text
            leaked = [s for s in never if s in page]
            assert not leaked, leaked
            a = page.split('id="model-a"')[1].split('id="model-b"')[0]
            b = page.split('id="model-b"')[1]
            assert (GOOD in a, POOR in b) == ((row["run_a"] == RUNS[0]),) * 2
            # ground truth hidden by default: no green boxes, no "Ground truth"
            assert 'class="gt"' not in page and "Ground truth" not in page
            # the image only through this reviewer's token-checked route
            assert f'href="/r/{tokens[reviewer]}/image/{row["item_id"]}/0"' in page
            assert (
                r.headers["cache-control"] == "no-store"
                and "script-src 'nonce-" in r.headers["content-security-policy"]
            )
            assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing from another origin


def test_vote_is_saved_validated_and_resumes(tmp_path):
    folder, _, tokens = make_study(tmp_path, limit=3, reviewers=("alice",))
    client = TestClient(create_app(folder))
    t = tokens["alice"]
    rows = assignments(folder, "alice")
    first = client.get(f"/r/{t}").text
    assert "item 1 of 3" in first and "0 of 3 reviewed" in first
    body = {
        "item_id": rows[0]["item_id"],
        **dict.fromkeys(CRITERION_KEYS, "A"),
        "comment": " ok ",
        "elapsed_ms": "1234",
    }
    r = client.post(f"/r/{t}/vote", content=urlencode(body), follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/r/{t}"
    page = client.get(f"/r/{t}").text
    assert "item 2 of 3" in page and "1 of 3 reviewed" in page
    # incomplete or invalid votes are refused and change nothing
    for bad in (
        {**body, "coherence": ""},
        {**body, "coherence": "C"},
        {**body, "item_id": "0123456789abcdef"},
        {**body, "comment": "x" * 5001},
    ):
        bad = {
            **bad,
            "item_id": bad["item_id"] if bad["item_id"] != rows[0]["item_id"] else rows[1]["item_id"],
        }
        assert client.post(f"/r/{t}/vote", content=urlencode(bad)).status_code == 400
    with db.connect(db.study_db(folder)) as conn:
        votes = [dict(v) for v in conn.execute("SELECT * FROM votes")]
    assert len(votes) == 1
    assert votes[0]["comment"] == "ok" and votes[0]["elapsed_ms"] == 1234 and votes[0]["revisions"] == 0
    # revisiting shows the saved vote; saving again replaces it
    again = client.get(f"/r/{t}?item=1").text
    assert "already voted" in again and again.count("required checked>") == len(CRITERION_KEYS)
    client.post(f"/r/{t}/vote", content=urlencode({**body, "grounded_preference": "tie"}))
    with db.connect(db.study_db(folder)) as conn:
        v = conn.execute("SELECT grounded_preference, revisions FROM votes").fetchall()
    assert [tuple(x) for x in v] == [("tie", 1)]
    assert client.get(f"/r/{t}?item=9").status_code == 404
    assert client.get(f"/r/{t}?item=x").status_code == 404
    assert client.get(f"/r/{t}/image/{rows[0]['item_id']}/1").status_code == 404  # one image per record
    for row in rows[1:]:
        client.post(f"/r/{t}/vote", content=urlencode({**body, "item_id": row["item_id"]}))
    assert "All 3 items reviewed" in client.get(f"/r/{t}").text


def test_show_truth_study_shows_ground_truth(tmp_path):
    folder, _, tokens = make_study(tmp_path, limit=5, reviewers=("alice",), show_truth=True)
    client = TestClient(create_app(folder))
    pages = [client.get(f"/r/{tokens['alice']}?item={k}").text for k in range(1, 6)]
    assert all("Ground truth" in p for p in pages)
    assert any('class="gt"' in p for p in pages)  # green ground-truth boxes where the record has boxes


def test_credentialed_study_refuses_a_public_interface_without_the_flag(tmp_path, monkeypatch, caplog):
    folder, _, tokens = make_study(tmp_path, limit=2, reviewers=("alice",), source="mimic-cxr")
    started = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: started.append((app, kw)))
    for host in ("0.0.0.0", "192.168.1.20", "::"):
        with pytest.raises(
            StudyError, match=rf"Refusing to serve .* on {re.escape(host)}: it shows credentialed data"
        ):
            serve(folder, host=host, port=9001)
    with pytest.raises(SystemExit, match=r"^evaluation.review serve: Refusing to serve") as e:
        main(["serve", str(folder), "--host", "0.0.0.0"])
    assert "\n" not in str(e.value)  # one line, no traceback
    assert started == []  # nothing was bound
    serve(folder, host="127.0.0.1")  # local: fine, no warning
    app, kw = started[-1]
    assert kw["host"] == "127.0.0.1"
    assert "Data-use warning" not in TestClient(app).get(f"/r/{tokens['alice']}").text
    main(["serve", str(folder), "--host", "0.0.0.0", "--allow_remote_credentialed"])
    app, kw = started[-1]
    assert kw["host"] == "0.0.0.0"
    assert "WARNING: Data-use warning" in caplog.text
    page = TestClient(app).get(f"/r/{tokens['alice']}").text
    assert "Data-use warning: this study shows credentialed data (mimic-cxr)" in page


def test_non_credentialed_study_may_bind_elsewhere(tmp_path, monkeypatch):
    folder, _, _ = make_study(tmp_path, limit=2, reviewers=("alice",))
    started = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: started.append(kw))
    serve(folder, host="0.0.0.0")
    assert started[0]["host"] == "0.0.0.0"
    assert review_app.is_local_host("127.0.0.5") and review_app.is_local_host("::1")
    assert not review_app.is_local_host("0.0.0.0") and not review_app.is_local_host("10.0.0.1")


def test_several_images_per_record(tmp_path):
    """A record with two views (schema: image may be a list): boxes on the first, the second shown below."""
    data = phantom(tmp_path)
    path = data / "records.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**r, "image": [r["image"], rows[0]["image"]]}) + "\n" for r in rows))
    folder, links = create_study(two_runs(tmp_path, data), tmp_path / "study", ["alice"], limit=2, seed=1)
    client = TestClient(create_app(folder))
    token = dict(links)["alice"]
    page = client.get(f"/r/{token}").text
    item = assignments(folder, "alice")[0]["item_id"]
    assert f'src="/r/{token}/image/{item}/1"' in page and "view 2" in page
    assert client.get(f"/r/{token}/image/{item}/1").content.startswith(PNG)
    assert client.get(f"/r/{token}/image/{item}/2").status_code == 404


def test_numbers_in_paths_and_forms_are_checked_not_500(tmp_path):
    """Unicode digits pass str.isdigit() and then fail int(); 30 nines overflow SQLite: both were a 500.
    A negative time was stored. Each is now a short 400 / 404 and nothing is saved."""
    folder, _, tokens = make_study(tmp_path, limit=3, reviewers=("alice",))
    client = TestClient(create_app(folder), raise_server_exceptions=False)
    t = tokens["alice"]
    rows = assignments(folder, "alice")
    for item in ("%C2%B2", "%D9%A1", "9" * 30, "0", "-1", "+1", "1.0", "%201", "4"):
        r = client.get(f"/r/{t}?item={item}")
        assert r.status_code == 404 and "There is no item" in r.text, item
    for k in ("%C2%B2", "9" * 30, "-0", "1"):
        assert client.get(f"/r/{t}/image/{rows[0]['item_id']}/{k}").status_code == 404, k
    body = {"item_id": rows[0]["item_id"], **dict.fromkeys(CRITERION_KEYS, "A")}
    for elapsed in ("9" * 30, "-5", "²", "1.5", str(db.MAX_ELAPSED_MS + 1)):
        r = client.post(f"/r/{t}/vote", content=urlencode({**body, "elapsed_ms": elapsed}))
        assert r.status_code == 400 and "elapsed_ms" in r.text, elapsed
    with db.connect(db.study_db(folder)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == 0
    # the bounds themselves, and a form without a time, are fine
    for elapsed, stored in (("0", 0), (str(db.MAX_ELAPSED_MS), db.MAX_ELAPSED_MS), ("", None)):
        r = client.post(
            f"/r/{t}/vote", content=urlencode({**body, "elapsed_ms": elapsed}), follow_redirects=False
        )
        assert r.status_code == 303, elapsed
        with db.connect(db.study_db(folder)) as conn:
            assert conn.execute("SELECT elapsed_ms FROM votes").fetchone()[0] == stored
    assert client.get(f"/r/{t}?item=3").status_code == 200
    with db.connect(db.study_db(folder)) as conn, pytest.raises(ValueError, match="elapsed_ms -1"):
        db.save_vote(conn, 1, rows[0]["item_id"], dict.fromkeys(CRITERION_KEYS, "A"), elapsed_ms=-1)
