"""A text backend for any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, SGLang, llama.cpp server,
Ollama, LiteLLM, ...): the way most third-party models are evaluated.

Each prompt is one user message (after an optional system message) POSTed to ``{base_url}/chat/completions``
with the standard library's HTTP client. A batch of prompts is sent concurrently by a thread pool
(``concurrency`` requests at a time). Each request has a timeout; connection errors, timeouts, HTTP 408/409/
429 and 5xx are retried with exponential backoff (honouring ``Retry-After``); other HTTP errors (a wrong model
name, a bad key) fail at once with the server's message. A request that still fails raises
:class:`BackendError`, which the harness records as that episode's error.

The API reports token *counts* but no token ids, so completions carry ``prompt_tokens`` / ``response_tokens``
and empty id lists: such an agent can be evaluated, not trained.
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hiergym.agents.base import Completion

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
#: The chat-completions API accepts at most four stop sequences.
MAX_STOP = 4


class BackendError(RuntimeError):
    """A request to a model endpoint that failed (after retries, where retrying made sense)."""


class OpenAIChatBackend:
    """OpenAI-compatible chat completions as a :class:`~hiergym.agents.base.TextBackend`.

    Args:
        model: the model name the server knows.
        base_url: the API root, as for the ``openai`` client (e.g. ``https://api.openai.com/v1``,
            ``http://localhost:8000/v1``).
        api_key: the key; default: read from the environment variable ``api_key_env``.
        api_key_env: where the key is read from (default ``OPENAI_API_KEY``). A missing key is fine for local
            servers that need none.
        timeout: seconds per request.
        max_retries: retries of a failed request (so ``max_retries + 1`` attempts).
        backoff: first retry delay in seconds, doubled each retry (with jitter), capped at 30 s.
        concurrency: requests in flight at once for a batch.
        system_prompt: an optional system message.
        extra_body: extra JSON fields for every request (e.g. ``{"top_k": 20}`` for vLLM).
    """

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 1.0,
        concurrency: int = 8,
        system_prompt: str | None = None,
        extra_body: dict[str, Any] | None = None,
    ):
        if not model:
            raise ValueError("an OpenAI-compatible backend needs a model name (openai:MODEL@BASE_URL)")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base URL {base_url!r} must start with http:// or https:// (e.g. "
                             "http://localhost:8000/v1)")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get(api_key_env)
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.concurrency = max(1, concurrency)
        self.system_prompt = system_prompt
        self.extra_body = dict(extra_body or {})
        self.name = f"openai:{model}@{self.base_url}"

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/chat/completions"

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> list[Completion]:
        """One chat completion per prompt, ``concurrency`` at a time; raises :class:`BackendError`."""
        if not prompts:
            return []
        body = {"model": self.model, "max_tokens": max_new_tokens, "temperature": temperature, **self.extra_body}
        if temperature > 0 and top_p < 1.0:
            body["top_p"] = top_p
        if stop:
            body["stop"] = list(stop)[:MAX_STOP]
        if seed is not None:
            body["seed"] = seed
        if len(prompts) == 1 or self.concurrency == 1:
            return [self._complete(p, body) for p in prompts]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            return list(pool.map(lambda p: self._complete(p, body), prompts))

    def _messages(self, prompt: str) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*messages, {"role": "user", "content": prompt}]

    def _complete(self, prompt: str, body: dict[str, Any]) -> Completion:
        payload = json.dumps({**body, "messages": self._messages(prompt)}).encode()
        data = self._post_with_retries(payload)
        try:
            choice = data["choices"][0]
            text = (choice.get("message") or {}).get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise BackendError(f"{self.endpoint} answered without choices[0].message: {str(data)[:300]}") from None
        usage = data.get("usage") or {}
        finish = choice.get("finish_reason") or "stop"
        return Completion(
            prompt_text=prompt,
            response_text=text,
            finish_reason="length" if finish == "length" else "stop",
            prompt_tokens=usage.get("prompt_tokens"),
            response_tokens=usage.get("completion_tokens"),
        )

    def _post_with_retries(self, payload: bytes) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last_error = ""
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            request = urllib.request.Request(self.endpoint, data=payload, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                detail = _error_detail(exc)
                last_error = f"HTTP {exc.code} from {self.endpoint}: {detail}"
                if exc.code not in RETRYABLE_STATUS:
                    raise BackendError(last_error) from None
                retry_after = _retry_after_seconds(exc.headers.get("Retry-After") if exc.headers else None)
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                last_error = f"cannot reach {self.endpoint}: {reason}"
            except json.JSONDecodeError as exc:
                last_error = f"{self.endpoint} answered with invalid JSON: {exc}"
            if attempt < self.max_retries:
                delay = min(30.0, self.backoff * 2**attempt) * (0.5 + random.random() / 2)
                time.sleep(retry_after if retry_after is not None else delay)
        raise BackendError(f"{last_error} (after {self.max_retries + 1} attempts)")


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the status line is enough then
        return str(exc.reason)
    try:
        error = json.loads(text).get("error")
        if isinstance(error, dict):
            return str(error.get("message") or error)
        if error:
            return str(error)
    except (json.JSONDecodeError, AttributeError):
        pass
    return text[:300] or str(exc.reason)


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(60.0, max(0.0, float(value)))
    except ValueError:
        return None


def parse_openai_spec(target: str) -> tuple[str, str]:
    """``MODEL@BASE_URL`` -> ``(model, base_url)``."""
    cut = target.rfind("@http")  # a URL may hold '@' (user@host), so split before the scheme when there is one
    model, base_url = (target[:cut], target[cut + 1:]) if cut > 0 else target.rpartition("@")[::2]
    if not model or not base_url:
        raise ValueError(
            f"openai agent spec {target!r} must be MODEL@BASE_URL, e.g. openai:gpt-4o-mini@https://api.openai.com/v1"
            " or openai:Qwen2.5-7B-Instruct@http://localhost:8000/v1"
        )
    return model, base_url
