"""A text backend for any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, SGLang, llama.cpp's
``llama-server``, ``llama-cpp-python[server]``, Ollama, LiteLLM, ...): the way most third-party models are
evaluated.

Each prompt becomes one request to ``{base_url}/chat/completions``: the agent's instructions (the role and rules
at the start of a full-style prompt, :func:`~hiergym.agents.prompts.split_system_prompt`) as a **system**
message, the rest as the user message, so the model's chat template does not add its own default system
prompt. A batch of prompts is sent concurrently by a thread pool (``concurrency`` requests at a time).

**HTTP client** (``transport``): the official ``openai`` package when it is installed (``pip install
"hiergym[openai]"``: connection pooling, separate connect and read timeouts, typed errors), else the standard
library's ``urllib`` with the same behaviour. The ``openai`` client's own retries are switched off
(``max_retries=0``): it retries read timeouts too, and with a generic "Request timed out." message; this module
retries with its own policy instead:

- retried with exponential backoff (honouring ``Retry-After``): connection errors (refused, reset, connect
  timeouts), HTTP 408, 429, 502, 503, 504, and any 5xx that carries ``Retry-After``;
- **not** retried: read timeouts (a server that serves one request at a time is still generating the
  abandoned answer; retrying piles generations up on it: ``retry_timeouts=True`` to retry them anyway), a 500
  without ``Retry-After`` (usually the same failure again), other 4xx (a bad key, a wrong model or URL).

**Errors are per prompt**: :meth:`OpenAIChatBackend.generate` never raises for a request that fails; that
prompt's :class:`~hiergym.agents.base.Completion` has ``finish_reason="error"``, an empty response and
``error`` set to the underlying message (``read timed out after 60 s from http://...``, ``HTTP 404 from ...:
Not Found; ... try .../v1``), and the agents turn it into that episode's ``agent_error``. The other prompts of
the batch are unaffected.

**Log-probs** (``logprobs=True``, the default): requests ask for ``logprobs: true, top_logprobs: 1`` and vLLM's
``return_tokens_as_token_ids: true``; the completion keeps the sampled tokens' log-probs
(``response_logprobs``) and, where the server gives them (vLLM: tokens spelled ``token_id:123``, or
``token_ids``), their ids (``response_token_ids``). A server that rejects those fields gets the request again
without them (once), and the backend remembers. ``top_logprobs`` is 1, not 0: llama.cpp's ``llama-server``
returns no probabilities at all for 0.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hiergym.agents.base import Completion

#: Statuses retried with backoff whether or not the server sent Retry-After (any other 5xx only with it).
RETRYABLE_STATUS = frozenset({408, 429, 502, 503, 504})
#: The chat-completions API accepts at most four stop sequences.
MAX_STOP = 4
#: Longest wait honoured from a Retry-After header, in seconds.
MAX_RETRY_AFTER = 60.0
TRANSPORTS = ("auto", "openai", "urllib")
#: Log-prob request fields per level: 2 = with vLLM's token ids, 1 = log-probs only, 0 = none.
_LOGPROB_FIELDS = {
    2: {"logprobs": True, "top_logprobs": 1, "return_tokens_as_token_ids": True},
    1: {"logprobs": True, "top_logprobs": 1},
    0: {},
}
_TOKEN_ID = re.compile(r"^token_id:(\d+)$")


class BackendError(RuntimeError):
    """A request to a model endpoint that failed (after retries, where retrying made sense)."""


class _RequestFailure(Exception):
    """One failed HTTP attempt, classified: the message to report, whether to retry, what the server asked."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


def openai_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("openai") is not None


class OpenAIChatBackend:
    """OpenAI-compatible chat completions as a :class:`~hiergym.agents.base.TextBackend`.

    Args:
        model: the model name the server knows.
        base_url: the API root, as for the ``openai`` client (e.g. ``https://api.openai.com/v1``,
            ``http://localhost:8000/v1``).
        api_key: the key; default: read from the environment variable ``api_key_env`` (prefer that: an
            ``api_key`` argument is redacted from run files but still typed on a command line).
        api_key_env: where the key is read from (default ``OPENAI_API_KEY``). A missing key is fine for local
            servers that need none.
        timeout: seconds to wait for the answer (the read timeout). A read timeout is not retried unless
            ``retry_timeouts``.
        connect_timeout: seconds to wait for the connection (default: ``min(10, timeout)``); connect timeouts
            are retried. (With ``transport="urllib"`` one socket timeout, ``timeout``, covers both.)
        max_retries: retries of a failed request where retrying makes sense (so ``max_retries + 1`` attempts).
        backoff: first retry delay in seconds, doubled each retry (with jitter), capped at 30 s.
        retry_timeouts: also retry read timeouts.
        concurrency: requests in flight at once for a batch (use 1 for a server that serves one at a time).
        system_prompt: an optional system message, put before the agent's own instructions.
        system_message: send the agent's instructions as a system message (default); False: everything in
            the user message (for chat templates that refuse a system role).
        logprobs: ask for the sampled tokens' log-probs (and ids where the server gives them).
        extra_body: extra JSON fields for every request (e.g. ``{"top_k": 20}`` for vLLM).
        choice_field: the request field that restricts a completion to a list of strings, sent when the agent
            constrains its actions (``action_constraint="admissible"``): vLLM's ``guided_choice`` (default).
            Such a server samples under the constraint, but the log-probs it reports may be the unconstrained
            ones: train on a local model when the ratio must be exact.
        transport: ``"auto"`` (the ``openai`` package if installed, else ``urllib``), ``"openai"`` or
            ``"urllib"``.
    """

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        connect_timeout: float | None = None,
        max_retries: int = 4,
        backoff: float = 1.0,
        retry_timeouts: bool = False,
        concurrency: int = 8,
        system_prompt: str | None = None,
        system_message: bool = True,
        logprobs: bool = True,
        extra_body: dict[str, Any] | None = None,
        choice_field: str = "guided_choice",
        transport: str = "auto",
    ):
        if not model:
            raise ValueError("an OpenAI-compatible backend needs a model name (openai:MODEL@BASE_URL)")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base URL {base_url!r} must start with http:// or https:// (e.g. "
                             "http://localhost:8000/v1)")
        if transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {transport!r}; choose one of {', '.join(TRANSPORTS)}")
        if transport == "openai" and not openai_available():
            raise ImportError('transport="openai" needs the openai package: pip install "hiergym[openai]" '
                              '(or transport="urllib", the standard library client)')
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get(api_key_env)
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout) if connect_timeout is not None else min(10.0, self.timeout)
        self.max_retries = max(0, int(max_retries))
        self.backoff = backoff
        self.retry_timeouts = retry_timeouts
        self.concurrency = max(1, concurrency)
        self.system_prompt = system_prompt
        self.system_message = system_message
        self.extra_body = dict(extra_body or {})
        self.choice_field = choice_field
        self.transport = ("openai" if openai_available() else "urllib") if transport == "auto" else transport
        self.name = f"openai:{model}@{self.base_url}"
        #: What the server accepts of the log-prob fields (lowered, and kept, when it rejects them).
        self.logprob_level = 2 if logprobs else 0
        self._lock = threading.Lock()
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:  # picklable for harness workers: the client is rebuilt lazily
        state = dict(self.__dict__)
        state["_client"] = None
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/chat/completions"

    # ------------------------------------------------------------------------------------------- public
    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        choices: Sequence[Sequence[str] | None] | None = None,
        seeds: Sequence[int] | None = None,
    ) -> list[Completion]:
        """One chat completion per prompt, ``concurrency`` at a time; ``choices`` (per prompt, None or the
        strings the completion must be one of) go in the ``choice_field`` of that prompt's request. ``seeds``
        (one per prompt) is each request's ``seed`` (a server that seeds per request, as vLLM does, then
        samples every prompt from its own stream); else ``seed`` goes in every request.

        Never raises for a failed request: that prompt's completion has ``finish_reason="error"`` and
        ``error`` set (see the module docstring).
        """
        if not prompts:
            return []
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_new_tokens, "temperature": temperature}
        if temperature > 0 and top_p < 1.0:
            body["top_p"] = top_p
        if stop:
            body["stop"] = list(stop)[:MAX_STOP]
        if seed is not None:
            body["seed"] = seed
        body.update(self.extra_body)
        bodies = [body] * len(prompts)
        if seeds is not None:
            if len(seeds) != len(prompts):
                raise ValueError(f"seeds: one per prompt, got {len(seeds)} for {len(prompts)} prompts")
            bodies = [{**body, "seed": int(s) % 2**31} for s in seeds]  # int32: what every server takes
        if choices is not None:
            bodies = [{**b, self.choice_field: list(c)} if c else b for b, c in zip(bodies, choices, strict=True)]
        if len(prompts) == 1 or self.concurrency == 1:
            completions = [self._complete_or_error(p, b) for p, b in zip(prompts, bodies, strict=True)]
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
                completions = list(pool.map(self._complete_or_error, prompts, bodies))
        if choices is not None:
            for completion, c in zip(completions, choices, strict=True):
                completion.choices = list(c) if c else None
        return completions

    def messages(self, prompt: str) -> list[dict[str, str]]:
        """The chat messages a prompt is sent as (system instructions split off, see the module docstring)."""
        from hiergym.agents.prompts import split_system_prompt

        instructions, user = split_system_prompt(prompt) if self.system_message else (None, prompt)
        system = "\n\n".join(s for s in (self.system_prompt, instructions) if s)
        return [*([{"role": "system", "content": system}] if system else []), {"role": "user", "content": user}]

    # --------------------------------------------------------------------------------------- internals
    def _complete_or_error(self, prompt: str, body: dict[str, Any]) -> Completion:
        try:
            return self._complete(prompt, body)
        except _RequestFailure as failure:
            error = failure.message
        except Exception as exc:  # noqa: BLE001 - one prompt's failure must not fail the batch
            error = f"{type(exc).__name__} while calling {self.endpoint}: {exc}"
        return Completion(prompt_text=prompt, response_text="", finish_reason="error", error=error)

    def _complete(self, prompt: str, body: dict[str, Any]) -> Completion:
        request = {**body, "messages": self.messages(prompt)}
        level = self.logprob_level
        downgraded = False
        while True:
            try:
                data = self._post_with_retries({**request, **_LOGPROB_FIELDS[level]})
                break
            except _RequestFailure as failure:
                lower = self._lower_logprob_level(level, failure)
                if lower is None or downgraded:
                    raise
                level, downgraded = lower, True  # the server may reject the log-prob fields: once without them
        if downgraded:
            with self._lock:
                self.logprob_level = min(self.logprob_level, level)
        return self._parse(prompt, data)

    @staticmethod
    def _lower_logprob_level(level: int, failure: _RequestFailure) -> int | None:
        """The log-prob level to retry at after ``failure`` (None: the failure is not about those fields)."""
        if level == 0:
            return None
        message = failure.message.lower()
        names_ids = "return_tokens_as_token_ids" in message
        names_logprobs = "logprob" in message
        if not (names_ids or names_logprobs or failure.status in (400, 422)):
            return None
        return 1 if level == 2 and names_ids and not names_logprobs else 0

    def _parse(self, prompt: str, data: Any) -> Completion:
        try:
            choice = data["choices"][0]
            text = (choice.get("message") or {}).get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise _RequestFailure(f"{self.endpoint} answered without choices[0].message: {str(data)[:300]}",
                                  retryable=False) from None
        usage = data.get("usage") or {}
        logprobs, token_ids = _token_logprobs(choice)
        prompt_ids = data.get("prompt_token_ids")
        finish = choice.get("finish_reason") or "stop"
        return Completion(
            prompt_text=prompt,
            response_text=text,
            prompt_token_ids=[int(i) for i in prompt_ids] if _all_ints(prompt_ids) else [],
            response_token_ids=token_ids,
            response_logprobs=logprobs,
            finish_reason="length" if finish == "length" else "stop",
            prompt_tokens=usage.get("prompt_tokens"),
            response_tokens=usage.get("completion_tokens"),
        )

    def _post_with_retries(self, payload: dict[str, Any]) -> Any:
        send = self._send_openai if self.transport == "openai" else self._send_urllib
        for attempt in range(self.max_retries + 1):
            try:
                return send(payload)
            except _RequestFailure as failure:
                if not failure.retryable or attempt == self.max_retries:
                    if attempt:
                        failure.message += f" (after {attempt + 1} attempts)"
                    raise
                delay = min(30.0, self.backoff * 2**attempt) * (0.5 + random.random() / 2)
                time.sleep(failure.retry_after if failure.retry_after is not None else delay)
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------------------------- classification
    def _status_failure(self, status: int, detail: str, retry_after: float | None) -> _RequestFailure:
        message = f"HTTP {status} from {self.endpoint}: {detail}"
        if status == 404 and not self.base_url.endswith("/v1"):
            message += (f"; the base URL {self.base_url} does not end in /v1: try {self.base_url}/v1 "
                        f"(openai:{self.model}@{self.base_url}/v1)")
        retryable = status in RETRYABLE_STATUS or (status >= 500 and retry_after is not None)
        return _RequestFailure(message, retryable=retryable, status=status, retry_after=retry_after)

    def _read_timeout(self) -> _RequestFailure:
        hint = "" if self.retry_timeouts else (" (not retried: the server may still be generating it; raise "
                                               "timeout= or lower concurrency=)")
        return _RequestFailure(f"read timed out after {self.timeout:g} s from {self.endpoint}{hint}",
                               retryable=self.retry_timeouts)

    def _cannot_connect(self, reason: Any) -> _RequestFailure:
        return _RequestFailure(f"cannot reach {self.endpoint}: {reason}", retryable=True)

    # -------------------------------------------------------------------------------------- transports
    def _openai_client(self) -> Any:
        with self._lock:
            if self._client is None:
                import openai

                self._client = openai.OpenAI(
                    # Local servers need no key, but the client insists on one ("EMPTY": vLLM's convention).
                    api_key=self.api_key or "EMPTY", base_url=self.base_url, max_retries=0,
                    timeout=openai.Timeout(self.timeout, connect=self.connect_timeout),
                )
            return self._client

    def _send_openai(self, payload: dict[str, Any]) -> Any:
        import openai

        client = self._openai_client()
        rest = {k: v for k, v in payload.items() if k not in ("model", "messages")}
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=payload["model"], messages=payload["messages"], extra_body=rest)
            text = raw.text
        except openai.APIStatusError as exc:
            headers = exc.response.headers if exc.response is not None else {}
            raise self._status_failure(exc.status_code, _openai_detail(exc), _retry_after(headers)) from None
        except openai.APITimeoutError as exc:
            cause = exc.__cause__
            if type(cause).__name__ in ("ConnectTimeout", "PoolTimeout"):
                raise self._cannot_connect(f"connect timed out after {self.connect_timeout:g} s") from None
            raise self._read_timeout() from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__
            raise self._cannot_connect(f"{type(cause).__name__}: {cause}" if cause else exc) from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise _RequestFailure(f"{self.endpoint} answered with invalid JSON ({exc}): {text[:200]!r}",
                                  retryable=False) from None

    def _send_urllib(self, payload: dict[str, Any]) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.endpoint, data=json.dumps(payload).encode(), headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            raise self._status_failure(exc.code, _http_error_detail(exc), _retry_after(exc.headers)) from None
        except urllib.error.URLError as exc:  # raised while connecting (refused, DNS, connect timeout)
            raise self._cannot_connect(getattr(exc, "reason", exc)) from None
        except TimeoutError:  # raised while waiting for / reading the answer
            raise self._read_timeout() from None
        except (ConnectionError, OSError) as exc:  # the server dropped the connection
            raise self._cannot_connect(f"{type(exc).__name__}: {exc}") from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise _RequestFailure(f"{self.endpoint} answered with invalid JSON ({exc}): {text[:200]!r}",
                                  retryable=False) from None


def _all_ints(values: Any) -> bool:
    return isinstance(values, list) and bool(values) and all(isinstance(v, int) for v in values)


def _token_logprobs(choice: dict[str, Any]) -> tuple[list[float], list[int]]:
    """``(log-probs, token ids)`` of the sampled tokens in an OpenAI-format choice (empty where absent)."""
    block = choice.get("logprobs")
    content = block.get("content") if isinstance(block, dict) else None
    entries = [c for c in content if isinstance(c, dict)] if isinstance(content, list) else []
    values = [c.get("logprob") for c in entries]
    logprobs = [float(v) for v in values] if values and all(isinstance(v, (int, float)) for v in values) else []
    ids: list[int] = []
    if _all_ints(choice.get("token_ids")):  # vLLM's return_token_ids
        ids = [int(i) for i in choice["token_ids"]]
    elif entries:  # vLLM's return_tokens_as_token_ids spells every token "token_id:123"
        matches = [_TOKEN_ID.match(str(c.get("token", ""))) for c in entries]
        if all(matches):
            ids = [int(m.group(1)) for m in matches if m]
    if logprobs and ids and len(logprobs) != len(ids):
        ids = []
    return logprobs, ids


def _detail_from_body(body: Any) -> str | None:
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            for key in ("message", "detail", "msg"):
                if error.get(key):
                    return str(error[key])
            return str(error)[:300]
        if error:
            return str(error)[:300]
    if isinstance(body, str) and body:
        return body[:300]
    return None


def _http_error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the status line is enough then
        return str(exc.reason)
    try:
        detail = _detail_from_body(json.loads(text))
    except json.JSONDecodeError:
        detail = None
    return detail or text[:300] or str(exc.reason)


def _openai_detail(exc: Any) -> str:
    detail = _detail_from_body(getattr(exc, "body", None))
    if detail:
        return detail
    try:
        text = exc.response.text
    except Exception:  # noqa: BLE001 - the client's own message then
        text = ""
    try:
        detail = _detail_from_body(json.loads(text)) if text else None
    except json.JSONDecodeError:
        detail = None
    return detail or text[:300] or str(getattr(exc, "message", exc))


def _retry_after(headers: Any) -> float | None:
    """Seconds from ``Retry-After-Ms`` / ``Retry-After`` (a number of seconds), capped; None when absent."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return min(MAX_RETRY_AFTER, max(0.0, float(value) / scale))
            except ValueError:
                continue
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
