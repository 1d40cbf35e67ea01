"""The review web app (FastAPI, served by uvicorn): one reviewer link per token.

Routes, all under the reviewer's token; anything else, and any wrong or missing token, is 403:

    GET  /r/TOKEN                    the first item not yet voted (``?item=N``: the N-th), or "done"
    POST /r/TOKEN/vote               save A / B / tie per criterion + comment, then the next item
    GET  /r/TOKEN/image/ITEM/K       the item's K-th image, re-encoded as PNG (no file metadata)

Every response says ``Cache-Control: no-store`` and ``Referrer-Policy: no-referrer``; pages allow
scripts only with the response's nonce and load nothing from another origin.
``serve`` binds 127.0.0.1 by default and refuses another interface for a study holding credentialed
sources unless ``allow_remote_credentialed`` (then every page shows a data-use warning).
"""

from __future__ import annotations

import io
import ipaddress
import json
import re
import secrets
import socket
import sys
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from PIL import Image

from evaluation.review import db, page
from evaluation.review.study import CRITERION_KEYS, StudyError

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765
MAX_COMMENT = 5000
# Numbers in paths and forms: ASCII digits only. str.isdigit() and int() also take Unicode digits
# ("²" passes isdigit, then int() raises) and unbounded lengths (30 nines overflow SQLite's INTEGER);
# both answered 500.
_NUMBER = re.compile(r"[0-9]{1,12}")


def parse_number(text: str | None, low: int, high: int) -> int | None:
    """``text`` as an int when it is 1-12 ASCII digits within [low, high], else None."""
    if text is None or not _NUMBER.fullmatch(text):
        return None
    value = int(text)
    return value if low <= value <= high else None


REMOTE_REFUSAL = """\
Refusing to serve {study} on {host}: it shows credentialed data ({sources}), and {host} is reachable
from other machines. Data use agreements (PhysioNet's among them) allow only credentialed people to
see such data. Serve on 127.0.0.1 (the default) and review on this machine (or through an SSH tunnel:
ssh -L {port}:127.0.0.1:{port} THIS_MACHINE). If everyone who can reach {host} is covered by the
agreement, pass --allow-remote-credentialed to say so; every page then shows a data-use warning."""


def is_local_host(host: str) -> bool:
    """True for an address only this machine can reach: localhost, 127.0.0.0/8, ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def data_use_warning(
    credentialed: dict, host: str, port: int, allow_remote_credentialed: bool, study: str = "the study"
) -> str | None:
    """The warning pages show, or None; raises StudyError where serving must not start."""
    if not credentialed or is_local_host(host):
        return None
    sources = ", ".join(f"{s}: {n} items" for s, n in sorted(credentialed.items()))
    if not allow_remote_credentialed:
        raise StudyError(REMOTE_REFUSAL.format(study=study, host=host, sources=sources, port=port))
    return page.DATA_USE_WARNING.format(sources=", ".join(sorted(credentialed)), host=host)


def png_bytes(path: str | Path) -> bytes:
    """The image as a fresh PNG: only pixels leave the file (no EXIF, text chunks or DICOM tags)."""
    with Image.open(path) as im:
        im = im.convert("L") if im.mode not in ("L", "RGB") else im.copy()
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def create_app(study: str | Path, warning: str | None = None) -> FastAPI:
    """The app for one study folder (or its study.sqlite)."""
    path = db.study_db(study)
    with db.connect(path) as conn:
        settings = db.meta(conn)
    show_truth = bool(settings.get("show_truth"))
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)  # no docs pages: they load CDN scripts

    def headers(nonce: str | None = None) -> dict:
        h = {
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
        }
        if nonce:
            h["Content-Security-Policy"] = (
                f"default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; "
                "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
            )
        return h

    def html_response(body: str, nonce: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(body, status_code=status, headers=headers(nonce))

    def forbidden() -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        text = "This link is not valid. Open the link you were given for this study."
        return html_response(page.message_page("403 Forbidden", text, nonce), nonce, 403)

    def reviewer_for(conn, token: str):
        """The reviewer whose token this is (constant-time comparison), or None."""
        found = None
        for r in db.reviewers(conn):
            if secrets.compare_digest(r["token"].encode(), token.encode()):
                found = r
        return found

    @app.get("/r/{token}")
    def show(token: str, item: str | None = None):  # parsed here: the token is checked first
        nonce = secrets.token_urlsafe(16)
        with db.connect(path) as conn:
            reviewer = reviewer_for(conn, token)
            if reviewer is None:
                return forbidden()
            rows = db.assignments(conn, reviewer["reviewer_id"])
            done = sum(1 for r in rows if r["voted_at"] is not None)
            if item is None:
                pos = next((i for i, r in enumerate(rows) if r["voted_at"] is None), None)
                if pos is None:
                    body = page.done_page(
                        token=token, reviewer=reviewer["name"], total=len(rows), nonce=nonce, warning=warning
                    )
                    return html_response(body, nonce)
            elif (number := parse_number(item, 1, len(rows))) is not None:
                pos = number - 1
            else:
                text = f"There is no item {item[:20]!r}: items are 1 to {len(rows)}."
                return html_response(page.message_page("Not found", text, nonce), nonce, 404)
            row = rows[pos]
            texts = db.completions(conn, row["item_id"])
            record = db.item(conn, row["item_id"])
        vote = {k: row[k] for k in (*CRITERION_KEYS, "comment")} if row["voted_at"] else None
        body = page.item_page(
            token=token,
            reviewer=reviewer["name"],
            item=dict(record),
            completions=(texts[row["run_a"]], texts[row["run_b"]]),
            position=pos + 1,
            total=len(rows),
            done=done,
            show_truth=show_truth,
            vote=vote,
            nonce=nonce,
            warning=warning,
        )
        return html_response(body, nonce)

    @app.post("/r/{token}/vote")
    async def vote(token: str, request: Request):
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        with db.connect(path) as conn:
            reviewer = reviewer_for(conn, token)
            if reviewer is None:
                return forbidden()
            item_id = form.get("item_id", "")
            assigned = conn.execute(
                "SELECT 1 FROM assignments WHERE reviewer_id = ? AND item_id = ?",
                (reviewer["reviewer_id"], item_id),
            ).fetchone()
            choices = {k: form.get(k) for k in CRITERION_KEYS}
            problems = [k for k, v in choices.items() if v not in db.CHOICES]
            if not assigned or problems or len(form.get("comment", "")) > MAX_COMMENT:
                nonce = secrets.token_urlsafe(16)
                why = (
                    f"missing or invalid: {', '.join(problems)}"
                    if problems
                    else "unknown item or comment too long"
                )
                text = f"The vote was not saved ({why}). Go back and choose A, B or tie on every criterion."
                return html_response(page.message_page("Vote not saved", text, nonce), nonce, 400)
            # the page's timer; a value that is not a plausible duration is refused, not stored
            elapsed_text = form.get("elapsed_ms") or None
            elapsed = parse_number(elapsed_text, 0, db.MAX_ELAPSED_MS) if elapsed_text else None
            if elapsed_text and elapsed is None:
                nonce = secrets.token_urlsafe(16)
                text = (
                    f"The vote was not saved: elapsed_ms {elapsed_text[:20]!r} is not a whole number of "
                    f"milliseconds from 0 to {db.MAX_ELAPSED_MS} (24 hours). Reload the item and vote again."
                )
                return html_response(page.message_page("Vote not saved", text, nonce), nonce, 400)
            db.save_vote(
                conn, reviewer["reviewer_id"], item_id, choices, form.get("comment", "").strip(), elapsed
            )
        return RedirectResponse(f"/r/{token}", status_code=303, headers=headers())

    @app.get("/r/{token}/image/{item_id}/{k}")
    def image(token: str, item_id: str, k: str):
        with db.connect(path) as conn:
            if reviewer_for(conn, token) is None:
                return forbidden()
            record = db.item(conn, item_id)
        images = json.loads(record["images"]) if record else []
        index = parse_number(k, 0, len(images) - 1)
        if index is None:
            return Response("no such image", status_code=404, media_type="text/plain", headers=headers())
        try:
            data = png_bytes(images[index])
        except OSError:
            return Response("image unreadable", status_code=404, media_type="text/plain", headers=headers())
        return Response(data, media_type="image/png", headers=headers())

    @app.get("/favicon.ico")
    def favicon():  # the browser asks on its own; answer without content rather than log a 403
        return Response(status_code=204, headers=headers())

    @app.api_route("/{rest:path}", methods=["GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"])
    def everything_else(rest: str):
        return forbidden()

    return app


def link(host: str, port: int, token: str) -> str:
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/r/{token}"


def serve(
    study: str | Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    allow_remote_credentialed: bool = False,
) -> None:
    """Serve the study until Ctrl-C; prints each reviewer's link."""
    import uvicorn

    with db.connect(db.study_db(study)) as conn:
        settings, reviewers = db.meta(conn), db.reviewers(conn)
    credentialed = settings.get("credentialed") or {}
    warning = data_use_warning(credentialed, host, port, allow_remote_credentialed, str(study))
    if warning:
        print(f"WARNING: {warning}", file=sys.stderr)
    app = create_app(study, warning)
    print(f"review study {study}: {settings['n_items']} items, {len(reviewers)} reviewer(s). Links:")
    for r in reviewers:
        print(f"  {r['name']:<16} {link(host, port, r['token'])}")
    print("Ctrl-C stops the server; votes are saved as they are cast, so the study resumes where it stopped.")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, server_header=False)
