"""A reviewer in a real headless browser: Debian's chromium driven by Playwright, offline, against the
app under uvicorn on 127.0.0.1. Votes with keys and clicks, reloads mid-way, resumes; then the
database must hold exactly those votes, and nothing the browser sent or received names a run."""

from __future__ import annotations

import shutil
from urllib.parse import urlsplit

import pytest

from evaluation.review import db
from evaluation.review.app import create_app
from evaluation.review.study import CRITERION_KEYS, assign
from tests.review_fixtures import GOOD, PNG, RUNS, LiveServer, assignments, make_study, secrets_of

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip(
    "playwright.sync_api", reason="needs playwright (pip install -r requirements-dev.txt)"
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)"
)
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
N = 5


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, timeout=60_000)
        yield b
        b.close()


def test_reviewer_votes_with_keys_and_clicks_reloads_and_resumes(tmp_path, browser):
    study, runs, tokens = make_study(tmp_path, limit=N, reviewers=("alice", "bob"), seed=11)
    with LiveServer(create_app(study)) as server:
        page = browser.new_page()
        sent, received, origins = [], [], set()

        def request(r):
            sent.append(f"{r.method} {r.url} {r.post_data or ''}")
            origins.add(urlsplit(r.url).netloc)

        def keep(resp):
            if resp.request.resource_type == "document" and not 300 <= resp.status < 400:
                received.append(resp.text())

        page.on("request", request)

        page.on("response", keep)
        link = f"{server.base}/r/{tokens['alice']}"
        shown_a = []  # per page: does panel A hold the good run's reasoning?

        def at_item(k: int, done: int):
            assert page.locator(".meta").first.inner_text().startswith(f"item {k} of {N}")
            assert page.locator("#progress-text").inner_text() == f"{done} of {N} reviewed"
            assert page.locator("svg.fig").count() == 2  # the image twice, each model's boxes on it
            assert page.locator("svg.fig rect.cited").count() >= 2
            shown_a.append(GOOD in page.locator("#model-a .reasoning").inner_text())

        def submit(action):
            with page.expect_navigation():
                action()

        page.goto(link)
        # 1: keys only
        at_item(1, 0)
        for key in "abta":
            page.keyboard.press(key)
        submit(lambda: page.keyboard.press("Enter"))
        # 2: clicks only, with a comment
        at_item(2, 1)
        for crit in CRITERION_KEYS:
            page.locator(f'fieldset[data-criterion="{crit}"] label.choice', has_text="B is better").click()
        page.locator("textarea[name=comment]").fill("A cites the wrong region")
        submit(lambda: page.locator("#submit").click())
        # 3: two choices, then a reload: nothing of item 3 was saved, the page resumes at item 3
        at_item(3, 2)
        page.keyboard.press("a")
        page.keyboard.press("a")
        page.reload()
        at_item(3, 2)
        assert page.locator("input[type=radio]:checked").count() == 0
        for key in "tttt":
            page.keyboard.press(key)
        submit(lambda: page.keyboard.press("Enter"))
        # 4: Enter with a criterion open does not submit; the open criterion is highlighted
        at_item(4, 3)
        page.keyboard.press("b")
        page.keyboard.press("Enter")
        assert page.locator("#missing").is_visible()
        assert page.locator("fieldset.criterion.active").get_attribute("data-criterion") == CRITERION_KEYS[1]
        assert page.locator("#progress-text").inner_text() == f"3 of {N} reviewed"
        page.keyboard.press("c")  # keys typed into the comment are text, not votes
        page.keyboard.type("tab")
        page.keyboard.press("Escape")
        for key in "bab":
            page.keyboard.press(key)
        submit(lambda: page.keyboard.press("Enter"))
        # 5: mixed: keys, then a click changes one choice
        at_item(5, 4)
        for key in "ttta":
            page.keyboard.press(key)
        page.locator(
            'fieldset[data-criterion="grounded_preference"] label.choice', has_text="B is better"
        ).click()
        submit(lambda: page.locator("#submit").click())
        assert f"All {N} items reviewed" in page.locator("h2").inner_text()
        assert page.locator("#progress-text").inner_text() == f"{N} of {N} reviewed"

        # a wrong token: 403 and no image, in the browser too
        rows = assignments(study, "alice")
        bad = tokens["alice"][::-1]
        assert page.goto(f"{server.base}/r/{bad}").status == 403
        img = page.request.get(f"{server.base}/r/{bad}/image/{rows[0]['item_id']}/0")
        assert img.status == 403 and PNG not in img.body()
        # Response events reach `keep` asynchronously: on a busy machine the last (the 403 page) can
        # still be on its way here. Playwright delivers pending events while it waits.
        page.wait_for_timeout(500)
        page.close()

    # the database holds exactly the votes cast, as cast
    expected = [
        (["A", "B", "tie", "A"], ""),
        (["B", "B", "B", "B"], "A cites the wrong region"),
        (["tie"] * 4, ""),
        (["B", "B", "A", "B"], "tab"),
        (["B", "tie", "tie", "A"], ""),
    ]
    with db.connect(db.study_db(study)) as conn:
        votes = conn.execute("SELECT * FROM votes ORDER BY rowid").fetchall()
    assert len(votes) == N
    assert [v["item_id"] for v in votes] == [r["item_id"] for r in rows]
    assert [([v[c] for c in CRITERION_KEYS], v["comment"]) for v in votes] == expected
    assert all(v["revisions"] == 0 and v["elapsed_ms"] > 0 for v in votes)
    assert {v["reviewer_id"] for v in votes} == {rows[0]["reviewer_id"]}  # bob voted nothing

    # blinding: the sides seen match the recorded seed, vary across records; no run name or path anywhere
    seeded = assign(N, "11:alice")
    assert [(r["idx"], r["run_a"] == RUNS[0]) for r in rows] == seeded
    assert shown_a[:3] + shown_a[4:] == [first for _, first in seeded]  # (item 3 was seen twice)
    assert len(set(shown_a)) == 2
    never = secrets_of((study, runs, tokens))
    for text in sent + received:
        leaked = [s for s in never if s in text]
        assert not leaked, (leaked, text[:200])
    assert len(received) >= N + 3 and sum(s.startswith("POST ") for s in sent) == N
    assert origins == {urlsplit(server.base).netloc}  # nothing asked of any other host
