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
import logging
import re
import secrets
import socket
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from PIL import Image

from evaluation.review import db, page
from evaluation.review.study import CRITERION_KEYS, StudyError

log = logging.getLogger(__name__)
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765
MAX_COMMENT = 5000
# Numbers in paths and forms: ASCII digits only. str.isdigit() and int() also take Unicode digits
# ("²" passes isdigit, then int() raises) and unbounded lengths (30 nines overflow SQLite's INTEGER);
# either would make the app answer 500.
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
agreement, pass --allow_remote_credentialed to say so; every page then shows a data-use warning."""


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


_CSP = (
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def headers(nonce: str | None = None) -> dict:
    """Every response's headers; a page with scripts also gets its CSP with the script nonce."""
    h = {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    }
    if nonce:
        h["Content-Security-Policy"] = _CSP.format(nonce=nonce)
    return h


def html_response(body: str, nonce: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=headers(nonce))


def message_response(title: str, text: str, status: int) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    return html_response(page.message_page(title, text, nonce), nonce, status)


def forbidden() -> HTMLResponse:
    return message_response(
        "403 Forbidden", "This link is not valid. Open the link you were given for this study.", 403
    )


def reviewer_for(conn, token: str):
    """The reviewer whose token this is (constant-time comparison), or None."""
    found = None
    for r in db.reviewers(conn):
        if secrets.compare_digest(r["token"].encode(), token.encode()):
            found = r
    return found


def vote_refusal(conn, reviewer_id: int, form: dict) -> str | None:
    """Why a submitted vote is not saved, or None when it is valid."""
    assigned = conn.execute(
        "SELECT 1 FROM assignments WHERE reviewer_id = ? AND item_id = ?",
        (reviewer_id, form.get("item_id", "")),
    ).fetchone()
    problems = [k for k in CRITERION_KEYS if form.get(k) not in db.CHOICES]
    if not assigned or problems or len(form.get("comment", "")) > MAX_COMMENT:
        why = f"missing or invalid: {', '.join(problems)}" if problems else "unknown item or comment too long"
        return f"The vote was not saved ({why}). Go back and choose A, B or tie on every criterion."
    # the page's timer; a value that is not a plausible duration is refused, not stored
    elapsed_text = form.get("elapsed_ms") or None
    if elapsed_text and parse_number(elapsed_text, 0, db.MAX_ELAPSED_MS) is None:
        return (
            f"The vote was not saved: elapsed_ms {elapsed_text[:20]!r} is not a whole number of "
            f"milliseconds from 0 to {db.MAX_ELAPSED_MS} (24 hours). Reload the item and vote again."
        )
    return None


class StudyRoutes:
    """The reviewer routes of one study; each opens the database per request and checks the token first."""

    def __init__(self, path: Path, show_truth: bool, warning: str | None):
        self.path, self.show_truth, self.warning = path, show_truth, warning

    def show(self, token: str, item: str | None = None):  # parsed here: the token is checked first
        nonce = secrets.token_urlsafe(16)
        with db.connect(self.path) as conn:
            reviewer = reviewer_for(conn, token)
            if reviewer is None:
                return forbidden()
            rows = db.assignments(conn, reviewer["reviewer_id"])
            if item is None:
                pos = next((i for i, r in enumerate(rows) if r["voted_at"] is None), None)
                if pos is None:
                    body = page.done_page(
                        token=token,
                        reviewer=reviewer["name"],
                        total=len(rows),
                        nonce=nonce,
                        warning=self.warning,
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
        body = page.item_page(
            token=token,
            reviewer=reviewer["name"],
            item=dict(record),
            completions=(texts[row["run_a"]], texts[row["run_b"]]),
            position=pos + 1,
            total=len(rows),
            done=sum(1 for r in rows if r["voted_at"] is not None),
            show_truth=self.show_truth,
            vote={k: row[k] for k in (*CRITERION_KEYS, "comment")} if row["voted_at"] else None,
            nonce=nonce,
            warning=self.warning,
        )
        return html_response(body, nonce)

    async def vote(self, token: str, request: Request):
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        with db.connect(self.path) as conn:
            reviewer = reviewer_for(conn, token)
            if reviewer is None:
                return forbidden()
            refusal = vote_refusal(conn, reviewer["reviewer_id"], form)
            if refusal:
                return message_response("Vote not saved", refusal, 400)
            elapsed_text = form.get("elapsed_ms") or None
            db.save_vote(
                conn,
                reviewer["reviewer_id"],
                form["item_id"],
                {k: form[k] for k in CRITERION_KEYS},
                form.get("comment", "").strip(),
                parse_number(elapsed_text, 0, db.MAX_ELAPSED_MS) if elapsed_text else None,
            )
        return RedirectResponse(f"/r/{token}", status_code=303, headers=headers())

    def image(self, token: str, item_id: str, k: str):
        with db.connect(self.path) as conn:
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


def favicon():  # the browser asks on its own; answer without content rather than log a 403
    return Response(status_code=204, headers=headers())


def everything_else(rest: str):
    return forbidden()


def create_app(study: str | Path, warning: str | None = None) -> FastAPI:
    """The app for one study folder (or its study.sqlite)."""
    path = db.study_db(study)
    with db.connect(path) as conn:
        settings = db.meta(conn)
    routes = StudyRoutes(path, bool(settings.get("show_truth")), warning)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)  # no docs pages: they load CDN scripts
    app.get("/r/{token}")(routes.show)
    app.post("/r/{token}/vote")(routes.vote)
    app.get("/r/{token}/image/{item_id}/{k}")(routes.image)
    app.get("/favicon.ico")(favicon)
    methods = ["GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"]
    app.api_route("/{rest:path}", methods=methods)(everything_else)
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
    """Serve the study until Ctrl-C; logs each reviewer's link."""
    import uvicorn

    with db.connect(db.study_db(study)) as conn:
        settings, reviewers = db.meta(conn), db.reviewers(conn)
    credentialed = settings.get("credentialed") or {}
    warning = data_use_warning(credentialed, host, port, allow_remote_credentialed, str(study))
    if warning:
        log.warning("WARNING: %s", warning)
    app = create_app(study, warning)
    log.info("review study %s: %d items, %d reviewer(s). Links:", study, settings["n_items"], len(reviewers))
    for r in reviewers:
        log.info("  %-16s %s", r["name"], link(host, port, r["token"]))
    log.info(
        "Ctrl-C stops the server; votes are saved as they are cast, so the study resumes where it stopped."
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, server_header=False)
