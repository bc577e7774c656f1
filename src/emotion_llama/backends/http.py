"""JSON over HTTP to OpenAI-compatible servers (the clue LLM's endpoint, a vLLM server): one POST
with a timeout and retries with exponential back-off on 429, 5xx and network errors. A client
error (4xx) is not retried: it does not get better by asking again."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from emotion_llama.errors import EmotionLlamaError


class HTTPFailure(EmotionLlamaError):
    """No usable answer from the server: ``detail`` says why (the status and the start of the
    body, the network error, or a body that is not JSON)."""

    def __init__(self, url: str, detail: str, status: int | None = None) -> None:
        super().__init__(f"{url}: {detail}")
        self.url = url
        self.detail = detail
        self.status = status


def json_headers(api_key: str | None, accept: str = "application/json") -> dict[str, str]:
    """A JSON request's headers, with the bearer key when there is one."""
    headers = {"Content-Type": "application/json", "Accept": accept}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def get_json(url: str, *, api_key: str | None = None, timeout: float = 30.0) -> Any:
    """``GET url`` as JSON, once (a probe: the caller says what it was looking for)."""
    req = urllib.request.Request(url, headers=json_headers(api_key), method="GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        body = exc.read()[:300].decode("utf-8", "replace")
        raise HTTPFailure(url, f"HTTP {exc.code}: {body}", exc.code) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise HTTPFailure(url, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from None
    except ValueError as exc:
        raise HTTPFailure(url, f"not JSON ({exc})") from None


def post_json(
    url: str,
    payload: dict[str, Any],
    *,
    api_key: str | None = None,
    timeout: float = 120.0,
    retries: int = 4,
    backoff: float = 1.0,
) -> Any:
    """``POST url`` with ``payload`` as JSON; the answer parsed. Raises :class:`HTTPFailure` with
    the last problem once the retries are spent (or at once on a 4xx or a body that is not JSON)."""
    body = json.dumps(payload).encode()
    status: int | None = None
    last = ""
    for attempt in range(retries + 1):
        req = urllib.request.Request(url, data=body, headers=json_headers(api_key), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            status = exc.code
            last = f"HTTP {exc.code}: {exc.read()[:300].decode('utf-8', 'replace')}"
            if exc.code != 429 and exc.code < 500:
                break
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            status, last = None, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        except ValueError as exc:
            raise HTTPFailure(url, f"malformed response, not JSON ({exc})") from None
        if attempt < retries:
            time.sleep(backoff * 2**attempt)
    raise HTTPFailure(url, last, status)
