"""One OpenAI-compatible Chat Completions endpoint (OpenAI, Azure OpenAI, vLLM, ...) used by
the cold-start synthesis: the ``openai`` client with its own retries, usage counts.

Retries are the client's (``max_retries``): HTTP 408, 409, 429 and 5xx, timeouts and connection
errors, with exponential backoff and jitter, waiting as long as the server's ``Retry-After`` asks.
What the client does not retry is handled here, from the same budget of attempts: a malformed reply
(a 200 whose body is not JSON, an HTML page from a proxy, a choice without a message). HTTP
401/403/404 stop the whole run (``EndpointStop``) with a message naming the key's environment
variable. Any other failure fails that one request (``RequestFailed``); the run goes on. Every HTTP
attempt is counted, and every retry by the reason for it (the ledger's usage counts).
"""

from __future__ import annotations

import base64
import importlib
import ipaddress
import json
import mimetypes
import os
import random
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import openai

from data_prep.errors import OpenMedixError

STOP_STATUS = (401, 403, 404)  # the key or the URL is wrong: every further request would fail too


def _http_library():
    """The HTTP library the openai client sends with: httpx, or httpx2 from openai 3 on."""
    return importlib.import_module(openai.DefaultHttpxClient.__mro__[1].__module__.partition(".")[0])


HTTP_TIMEOUT = _http_library().TimeoutException


class EndpointStop(OpenMedixError, RuntimeError):
    """The endpoint refuses every request (bad key, no access, unknown model): stop the run."""


class MalformedReply(OpenMedixError, ValueError):
    """An HTTP 200 whose body is not a chat completion we can read."""


class RequestFailed(OpenMedixError, RuntimeError):
    """One request failed for good (retries spent, or an error retrying cannot fix)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class MissingKeyError(OpenMedixError, ValueError):
    """A remote endpoint and no API key in the environment variable named for it."""


class _Stopped(OpenMedixError, RuntimeError):
    """Raised instead of sending once the run is stopped; not an HTTP error, so the client does not
    retry it."""


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


def malformed_retry_wait(retry: int) -> float:
    """Seconds before retry ``retry`` (0, 1, ...) of a malformed reply, which the client does not retry
    (it was a 200): the client's own schedule for what it retries, 0.5 s doubling up to 8 s, less up to
    25 % jitter."""
    return min(8.0, 0.5 * 2**retry) * random.uniform(0.75, 1.0)


class _AttemptLog(openai.DefaultHttpxClient):
    """The openai client's HTTP client, noting the outcome of every attempt ("HTTP 429", "timeout",
    "connection error") for the thread that made it, since the client retries inside one call; and
    refusing to send once the run is stopped, so its retries stop too."""

    def __init__(self, stop: threading.Event, **kwargs):
        super().__init__(**kwargs)
        self._stop = stop
        self._local = threading.local()

    def start(self) -> list[str]:
        """A fresh list of this thread's attempts, filled as they happen."""
        self._local.outcomes = []
        return self._local.outcomes

    def send(self, request, **kwargs):
        if self._stop.is_set():
            raise _Stopped("the run is stopped")
        outcomes = getattr(self._local, "outcomes", [])  # [] for a request outside ChatEndpoint.complete
        try:
            response = super().send(request, **kwargs)
        except HTTP_TIMEOUT:
            outcomes.append("timeout")
            raise
        except Exception:
            outcomes.append("connection error")
            raise
        outcomes.append(f"HTTP {response.status_code}")
        return response


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
        stop: threading.Event | None = None,
    ):
        self.role, self.base_url, self.model, self.api_key_env = role, base_url, model, api_key_env
        self.max_retries = max_retries
        self.stop = stop or threading.Event()
        key = os.environ.get(api_key_env)
        self.key_note = f"read from ${api_key_env}"
        if not key:
            if not is_local_url(base_url):
                raise MissingKeyError(
                    f"No API key for the {role} endpoint {base_url}: ${api_key_env} is not set. "
                    f"Export it (or name another variable with --{'judge_' if role == 'judge' else ''}api_key_env)."
                )
            key, self.key_note = "EMPTY", f"${api_key_env} is not set, so the placeholder 'EMPTY' was sent"
        self._http = _AttemptLog(self.stop)
        common = {"api_key": key, "timeout": timeout, "max_retries": max_retries, "http_client": self._http}
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
            404: "does not know this URL or model: check --base_url and the model (deployment) name",
        }[err.status_code]
        return (
            f"The {self.role} endpoint {self.base_url} (model '{self.model}') {what} "
            f"(HTTP {err.status_code}: {err.message}). The key was {self.key_note}. "
            f"Fix it and run the same command again: finished records are kept and skipped."
        )

    def complete(self, messages: list[dict], **params) -> Reply:
        """One chat completion, retried on transient errors; raises EndpointStop or RequestFailed."""
        attempts = self._http.start()
        try:
            return self._complete(messages, params, attempts)
        finally:
            self._count(
                {
                    "requests": len(attempts),
                    "retries": max(0, len(attempts) - 1),
                    **Counter(f"retries after {outcome}" for outcome in attempts[:-1]),
                }
            )

    def _complete(self, messages: list[dict], params: dict, attempts: list[str]) -> Reply:
        """The client retries what it can within one call; a malformed reply is retried here, from what
        is left of the same budget."""
        while True:
            if self.stop.is_set():
                raise RequestFailed("run stopped", "a fatal error elsewhere stopped the run")
            client = self.client.with_options(max_retries=max(0, self.max_retries - len(attempts)))
            try:
                resp = client.chat.completions.create(model=self.model, messages=messages, **params)
                reply = parse_reply(resp)
            except (json.JSONDecodeError, UnicodeDecodeError, openai.APIResponseValidationError) as e:
                detail = f"the body is not valid JSON: {e}"[:300]
            except MalformedReply as e:
                detail = str(e)[:300]
            except (openai.APIError, _Stopped) as e:
                raise self._failure(e, len(attempts)) from None
            else:
                self._count(
                    {
                        "prompt_tokens": reply.prompt_tokens,
                        "completion_tokens": reply.completion_tokens,
                        "replies_without_usage": 0 if reply.has_usage else 1,
                    }
                )
                return reply
            attempts[-1] = "malformed reply"  # the 200 that brought it
            if len(attempts) > self.max_retries:
                raise RequestFailed("malformed reply", f"{detail} (gave up after {len(attempts)} attempts)")
            self.stop.wait(malformed_retry_wait(len(attempts) - 1))

    def _failure(self, err: Exception, attempts: int) -> Exception:
        """What an error the client gave up on means for the run: EndpointStop (and the run stopped) on a
        refused key or an unknown URL or model, else RequestFailed."""
        tries = f" (gave up after {attempts} attempts)" if attempts > 1 else ""
        if isinstance(err, openai.APIStatusError):
            if err.status_code in STOP_STATUS:
                self.stop.set()
                return EndpointStop(self._stop_message(err))
            return RequestFailed(f"HTTP {err.status_code}", str(err.message)[:300] + tries)
        if isinstance(err, openai.APITimeoutError):
            return RequestFailed("timeout", "no reply within --timeout" + tries)
        if isinstance(err, openai.APIConnectionError):
            return RequestFailed("connection error", str(err.__cause__ or err)[:300] + tries)
        if isinstance(err, _Stopped):
            return RequestFailed("run stopped", "a fatal error elsewhere stopped the run")
        return RequestFailed(type(err).__name__, str(err)[:300] + tries)
