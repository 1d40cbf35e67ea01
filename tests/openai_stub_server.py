"""A scriptable OpenAI-compatible Chat Completions server on 127.0.0.1, for tests.

It speaks the real wire format (``chat.completion`` objects with ``usage``, OpenAI-style error
bodies, ``Retry-After``), checks each request the way a vision endpoint would (a model, a user
turn with an ``image_url`` part holding a base64 data URL that decodes to an image) and asks a
``respond(request, stub)`` function what to answer:

    a str                      -> a completion with that text
    Status(code, headers=...)  -> an error reply (429, 500, 401, ...)
    Stall(seconds)             -> wait (until ``release()``), then answer with ``then``
    Raw(body, content_type)    -> HTTP 200 with exactly this body (a malformed reply: bad JSON, HTML, ...)

Usage:
    with StubServer(lambda req, stub: "<think> ... </think>. The answer is: \\boxed{yes}") as stub:
        client = openai.OpenAI(base_url=stub.base_url, api_key="k")
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_api_key",
    403: "permission_denied",
    429: "rate_limit_exceeded",
}


@dataclass
class Status:
    code: int
    message: str = "scripted error"
    headers: dict = field(default_factory=dict)


@dataclass
class Stall:
    seconds: float
    then: object = "late"


@dataclass
class Raw:
    body: str | dict
    content_type: str = "application/json"


@dataclass
class Request:
    """What the stub received: the parsed body, headers (lower-case names), path, arrival time, images."""

    body: dict
    headers: dict
    path: str
    time: float
    images: list = field(default_factory=list)
    raw: bytes = b""  # the request body as sent

    @property
    def model(self) -> str:
        return self.body.get("model", "")

    @property
    def text(self) -> str:
        """All text of all messages, joined."""
        parts = []
        for msg in self.body.get("messages", []):
            content = msg.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts += [c.get("text", "") for c in content if c.get("type") == "text"]
        return "\n".join(parts)


def chat_completion(text: str, model: str, prompt_tokens: int = 1000, completion_tokens: int = 100) -> dict:
    return {
        "id": f"chatcmpl-stub{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def request_problem(body: dict) -> tuple[str | None, list]:
    """Why the request is not a valid vision chat request (or None), and its decoded images."""
    if not isinstance(body, dict) or not body.get("model") or not isinstance(body.get("messages"), list):
        return "body needs a model and a messages list", []
    images = []
    for msg in body["messages"]:
        content = msg.get("content")
        if msg.get("role") != "user" or not isinstance(content, list):
            continue
        for part in content:
            if part.get("type") != "image_url":
                continue
            url = part.get("image_url", {}).get("url", "")
            if not url.startswith("data:image/") or ";base64," not in url:
                return f"image_url is not a base64 data URL: {url[:40]!r}", []
            try:
                images.append(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1], validate=True))))
            except Exception as e:  # noqa: BLE001 - any decode failure is the client's fault here
                return f"image data URL does not decode to an image: {e}", []
    if not images:
        return "no image_url part in the user turn", []
    return None, images


class StubServer:
    def __init__(self, respond, api_key: str | None = None):
        self.respond = respond
        self.api_key = api_key  # when set, other keys get HTTP 401
        self.requests: list[Request] = []
        self.problems: list[str] = []  # malformed requests seen (tests assert none)
        self._release = threading.Event()
        self._lock = threading.Lock()

    def __enter__(self) -> StubServer:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, str(v))
                self.end_headers()
                self.wfile.write(data)

            def _send_raw(self, answer: Raw) -> None:
                body = answer.body if isinstance(answer.body, str) else json.dumps(answer.body)
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, code: int, message: str, headers: dict | None = None) -> None:
                err = {
                    "message": message,
                    "type": ERROR_TYPES.get(code, "server_error"),
                    "param": None,
                    "code": None,
                }
                self._send(code, {"error": err}, headers)

            def do_POST(self):  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    body = None
                problem, images = request_problem(body)
                headers = {k.lower(): v for k, v in self.headers.items()}
                req = Request(body or {}, headers, self.path, time.monotonic(), images, raw)
                with stub._lock:
                    stub.requests.append(req)
                if not self.path.split("?")[0].endswith("/chat/completions"):
                    return self._error(404, f"no route {self.path}")
                if problem:
                    stub.problems.append(problem)
                    return self._error(400, problem)
                if stub.api_key is not None:
                    given = self.headers.get("api-key") or self.headers.get("Authorization", "").removeprefix(
                        "Bearer "
                    )
                    if given != stub.api_key:
                        return self._error(401, "Incorrect API key provided.")
                answer = stub.respond(req, stub)
                if isinstance(answer, Stall):
                    stub._release.wait(answer.seconds)
                    answer = answer.then
                if isinstance(answer, Status):
                    return self._error(answer.code, answer.message, answer.headers)
                if isinstance(answer, Raw):
                    return self._send_raw(answer)
                self._send(200, chat_completion(str(answer), req.model))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, client_address: None  # clients that hung up
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        """Let every stalled request finish now."""
        self._release.set()

    def __exit__(self, *exc) -> None:
        self.release()
        self.httpd.shutdown()
        self.httpd.server_close()

    def requests_for(self, needle: str) -> list[Request]:
        """Requests whose text contains ``needle``."""
        return [r for r in self.requests if needle in r.text]
