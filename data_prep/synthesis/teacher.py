"""One OpenAI-compatible Chat Completions endpoint (OpenAI, Azure OpenAI, vLLM, ...) used by
the cold-start synthesis: the real ``openai`` client, our own bounded retries, usage counts.

Retries (the client's own are switched off so there is one policy): HTTP 408, 409, 429 and
5xx, timeouts, connection errors and malformed replies (a 200 whose body is not JSON, an HTML
page from a proxy, a choice without a message) are retried with exponential backoff and jitter,
waiting at least as long as the server's ``Retry-After``. HTTP 401/403/404 stop the whole run
(``EndpointStop``) with a message naming the key's environment variable. Any other failure
fails that one request (``RequestFailed``); the run goes on.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import mimetypes
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

import openai

RETRY_STATUS = (408, 409, 429)  # and every 5xx
MAX_RETRY_AFTER_S = 600.0


class EndpointStop(RuntimeError):
    """The endpoint refuses every request (bad key, no access, unknown model): stop the run."""


class MalformedReply(ValueError):
    """An HTTP 200 whose body is not a chat completion we can read."""


class RequestFailed(RuntimeError):
    """One request failed for good (retries spent, or an error retrying cannot fix)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class Reply:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    has_usage: bool = True


def parse_reply(resp) -> Reply:
    """The first choice's text and finish reason, and the usage, checked field by field: the client
    builds its objects without validation, so a proxy's HTML page or a choice without ``message``
    arrives as a str or None where an object is expected (MalformedReply, not an AttributeError)."""
    choices = getattr(resp, "choices", None)
    if not isinstance(choices, list):
        raise MalformedReply(f"the reply is not a chat completion: {str(resp)[:200]!r}")
    if not choices:
        raise MalformedReply("the reply holds no choices")
    message = getattr(choices[0], "message", None)
    if message is None:
        raise MalformedReply("the first choice holds no message")
    text = getattr(message, "content", None)
    if text is not None and not isinstance(text, str):
        raise MalformedReply(f"the message content is {type(text).__name__}, not text")
    finish = getattr(choices[0], "finish_reason", None)
    usage = getattr(resp, "usage", None)

    def tokens(name: str) -> int | None:
        value = getattr(usage, name, None)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    prompt, completion = tokens("prompt_tokens"), tokens("completion_tokens")
    return Reply(
        text=text or "",
        finish_reason=finish if isinstance(finish, str) else None,
        prompt_tokens=prompt or 0,
        completion_tokens=completion or 0,
        has_usage=prompt is not None and completion is not None,
    )


def is_local_url(url: str) -> bool:
    """True when the URL's host is this machine: localhost, 127.0.0.0/8 or ::1."""
    host = urlsplit(url).hostname
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def image_data_url(path: str | Path) -> str:
    """The image file as a base64 data URL (how the Chat Completions API takes local images)."""
    path = Path(path)
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def retry_after_seconds(headers) -> float | None:
    """The server's requested wait: ``retry-after-ms``, or ``retry-after`` in seconds or as a date."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
    return None


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter (base * 2**attempt, 50-100 %, capped), never below Retry-After."""
    delay = min(cap, base * 2**attempt) * random.uniform(0.5, 1.0)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
    return delay


class ChatEndpoint:
    """A model behind an OpenAI-compatible URL; ``complete`` is thread-safe."""

    def __init__(
        self,
        *,
        role: str,
        base_url: str,
        model: str,
        api_key_env: str,
        azure_api_version: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        stop: threading.Event | None = None,
    ):
        self.role, self.base_url, self.model, self.api_key_env = role, base_url, model, api_key_env
        self.max_retries, self.backoff_base, self.backoff_max = max_retries, backoff_base, backoff_max
        self.stop = stop or threading.Event()
        key = os.environ.get(api_key_env)
        self.key_note = f"read from ${api_key_env}"
        if not key:
            if not is_local_url(base_url):
                raise SystemExit(
                    f"No API key for the {role} endpoint {base_url}: ${api_key_env} is not set. "
                    f"Export it (or name another variable with --{'judge-' if role == 'judge' else ''}api-key-env)."
                )
            key, self.key_note = "EMPTY", f"${api_key_env} is not set, so the placeholder 'EMPTY' was sent"
        common = {"api_key": key, "timeout": timeout, "max_retries": 0}
        if azure_api_version:
            self.client = openai.AzureOpenAI(azure_endpoint=base_url, api_version=azure_api_version, **common)
        else:
            self.client = openai.OpenAI(base_url=base_url, **common)
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()

    def _count(self, counts: dict[str, int]) -> None:
        with self._lock:
            self.stats.update(counts)

    def usage(self) -> dict[str, int]:
        """A snapshot of the counts (other threads update them)."""
        with self._lock:
            return dict(self.stats)

    def _stop_message(self, err: openai.APIStatusError) -> str:
        what = {
            401: "refused the API key: the key is wrong or expired",
            403: "refused access: the key lacks access to this model or resource",
            404: "does not know this URL or model: check --base-url and the model (deployment) name",
        }[err.status_code]
        return (
            f"The {self.role} endpoint {self.base_url} (model '{self.model}') {what} "
            f"(HTTP {err.status_code}: {err.message}). The key was {self.key_note}. "
            f"Fix it and run the same command again: finished records are kept and skipped."
        )

    def complete(self, messages: list[dict], **params) -> Reply:
        """One chat completion, retried on transient errors; raises EndpointStop or RequestFailed."""
        for attempt in range(self.max_retries + 1):
            if self.stop.is_set():
                raise RequestFailed("run stopped", "a fatal error elsewhere stopped the run")
            self._count({"requests": 1})
            retry_after = None
            try:
                resp = self.client.chat.completions.create(model=self.model, messages=messages, **params)
                reply = parse_reply(resp)
            except openai.APIStatusError as e:
                if e.status_code in (401, 403, 404):
                    self.stop.set()
                    raise EndpointStop(self._stop_message(e)) from None
                if e.status_code not in RETRY_STATUS and e.status_code < 500:
                    raise RequestFailed(f"HTTP {e.status_code}", str(e.message)[:300]) from None
                reason, detail = f"HTTP {e.status_code}", str(e.message)[:300]
                retry_after = retry_after_seconds(e.response.headers)
            except openai.APITimeoutError:
                reason, detail = "timeout", "no reply within --timeout"
            except openai.APIConnectionError as e:
                reason, detail = "connection error", str(e.__cause__ or e)[:300]
            except (json.JSONDecodeError, UnicodeDecodeError, openai.APIResponseValidationError) as e:
                reason, detail = "malformed reply", f"the body is not valid JSON: {e}"[:300]
            except MalformedReply as e:
                reason, detail = "malformed reply", str(e)[:300]
            else:
                self._count(
                    {
                        "prompt_tokens": reply.prompt_tokens,
                        "completion_tokens": reply.completion_tokens,
                        "replies_without_usage": 0 if reply.has_usage else 1,
                    }
                )
                return reply
            if attempt == self.max_retries:
                raise RequestFailed(reason, f"{detail} (gave up after {attempt + 1} attempts)")
            self._count({"retries": 1, f"retries after {reason}": 1})
            self.stop.wait(backoff_delay(attempt, self.backoff_base, self.backoff_max, retry_after))
        raise AssertionError("unreachable")
