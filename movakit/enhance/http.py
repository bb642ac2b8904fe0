"""A small JSON-over-HTTP client (standard library only) with a timeout and retries with exponential backoff.

Used by the OpenAI-compatible chat backend and the first-frame image endpoint. Timeouts, connection errors,
HTTP 429 and 5xx are retried; any other HTTP status, or a reply that is not JSON, fails at once.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass


class BackendError(RuntimeError):
    """An LLM or image endpoint gave no usable answer (timeout, HTTP error, malformed reply)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait for one request and how to retry it."""

    timeout_s: float
    max_retries: int
    backoff_s: float


def post_json(
    url: str,
    payload: dict,
    *,
    api_key: str,
    policy: RetryPolicy,
    notes: list[str],
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """POST `payload` as JSON and return the decoded JSON object; each retry is described in `notes`."""
    body = json.dumps(payload).encode("utf-8")
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    attempts = policy.max_retries + 1
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=policy.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            with exc:  # the error holds the response and its socket: close it before retrying
                detail = exc.read()[:200].decode("utf-8", "replace").strip()
            problem = f"HTTP {exc.code} from {url}" + (f": {detail}" if detail else "")
            if exc.code != 429 and exc.code < 500:
                raise BackendError(problem) from None
        except (TimeoutError, socket.timeout):
            problem = f"no answer from {url} within {policy.timeout_s:g} s"
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                problem = f"no answer from {url} within {policy.timeout_s:g} s"
            else:
                problem = f"cannot reach {url}: {exc.reason}"
        except (OSError, http.client.HTTPException) as exc:
            problem = f"connection to {url} failed: {exc!r}"
        else:
            try:
                decoded = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise BackendError(f"reply from {url} is not JSON: {raw[:80]!r}") from None
            if not isinstance(decoded, dict):
                raise BackendError(f"reply from {url} is not a JSON object")
            return decoded
        if attempt == attempts:
            raise BackendError(f"{problem} (gave up after {attempts} attempt(s))")
        delay = policy.backoff_s * 2 ** (attempt - 1)
        notes.append(f"{problem}; retry {attempt}/{policy.max_retries} in {delay:g} s")
        sleep(delay)
    raise AssertionError("unreachable")
