"""`OpenAIBackend`: any OpenAI-compatible HTTP endpoint (vllm serve, SGLang, llama.cpp, hosted).

`generate(prompts, params)` is synchronous; inside it runs an asyncio loop with one httpx
client, at most `max_concurrency` requests in flight, a per-request timeout, and retries
with exponential backoff and full jitter on transient failures:

- timeouts, dropped or refused connections (httpx transport errors),
- HTTP 408, 409, 429 and 5xx (a `Retry-After` header is honoured, capped),
- a 200 whose body is not JSON, or has no usable `choices`.

Any other 4xx fails at once with the server's own message. A request that still fails after
`max_retries` retries raises `OpenAIBackendError` naming the URL path, the last status or
failure, and the number of attempts, with `retryable` (the shared contract of
`base.BackendError`, read by the task retry condition) True unless the request was rejected;
`backend.stats` counts requests, tokens and retries by reason.

Endpoints: "chat" posts `messages` to `/chat/completions` (a text prompt becomes one user
message); "completions" posts `prompt` to `/completions` and rejects chat prompts with a
ValueError before any request (rendering a chat template needs the server's tokenizer, so
the client does not guess one).

Samples: `n > 1` goes out as one request with `n`. A server that rejects that (HTTP 400/422)
or returns fewer choices than asked (llama.cpp ignores `n`) gets one request per sample
instead, each with its own seed `derive_seed(seed, prompt, i)`; the backend remembers that
and skips the `n` request from then on. Partial answers are discarded so the samples a
prompt gets do not depend on when the capability was learnt. The seed sent for a whole
prompt is `derive_seed(seed, prompt, 0)`, so results do not depend on batch or shard.

Sent every time: model, max_tokens, temperature, top_p, seed (when not None) and stop (when
non-empty: an empty list means the same as none, and some hosted APIs reject `[]`).

The API key is read from the environment variable named by `api_key_env` (absent is fine
for local servers). It is kept out of repr(), `describe()`, pickles, log records and
exception messages; a server error that echoes it back is redacted. What this does NOT
protect against: anything with access to the process memory or environment, an HTTP (not
HTTPS) base URL on an untrusted network, and credentials written into `base_url` itself
(those are stripped from messages, but still sent).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import os
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from fdd_core import deadline
from fdd_core.backends.base import (
    BackendBase,
    BackendError,
    Completion,
    FinishReason,
    GenerationStats,
    Prompt,
    PromptError,
    SamplingParams,
    check_prompts,
    derive_seed,
)
from fdd_core.backends.retry import (
    RetryPolicy,
    is_retryable_status,
    parse_retry_after,
    retry_delay,
)

log = logging.getLogger(__name__)

ENDPOINT_PATHS = {"chat": "/chat/completions", "completions": "/completions"}
# Statuses a server uses to refuse a parameter; for an `n > 1` request they may mean "no n".
_PARAM_REJECTED = (400, 422)
_MESSAGE_LIMIT = 500  # characters of a server's error text kept in an exception
_FINISH_MAP: dict[str, FinishReason] = {
    "stop": "stop",
    "eos": "stop",
    "eos_token": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_calls": "stop",
    "function_call": "stop",
    "length": "length",
    "max_tokens": "length",
    "content_filter": "error",
    "abort": "error",
    "error": "error",
}


class OpenAIBackendError(BackendError):
    """A request that failed for good: a permanent 4xx, or transient errors past max_retries.

    `retryable` (the shared contract of `BackendError`) is False only for a rejected request
    (a 4xx other than 408/409/429, or a local protocol error); after timeouts, refused or
    dropped connections, 429 or 5xx it is True, so the task retry may wait for the server.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str,
        status: int | None,
        attempts: int,
        reason: str,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(message, retryable=reason != "rejected", endpoint=endpoint)
        self.path = path
        self.status = status
        self.attempts = attempts
        self.reason = reason


class _Transient(Exception):
    """One failed attempt worth retrying."""

    def __init__(
        self, reason: str, detail: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.status = status
        self.retry_after = retry_after


class _Permanent(Exception):
    """One failed attempt that no retry will fix (most 4xx)."""

    def __init__(self, status: int | None, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class _Call:
    """What the requests of one `generate` call share (bound to that call's event loop)."""

    client: httpx.AsyncClient
    sem: asyncio.Semaphore
    params: SamplingParams
    n_probe: asyncio.Event | None = None  # set once the first n > 1 request is settled


class _EnvSecret:
    """An API key read from the environment; never printed, pickled as the variable name."""

    __slots__ = ("_value", "env_name")

    def __init__(self, env_name: str) -> None:
        self.env_name = env_name
        self._value = os.environ.get(env_name) or None

    def __repr__(self) -> str:
        state = "set" if self._value else "unset"
        return f"<api key from ${self.env_name}: {state}>"

    __str__ = __repr__

    def __reduce__(self):  # a pickle re-reads the environment instead of carrying the key
        return (_EnvSecret, (self.env_name,))

    @property
    def present(self) -> bool:
        return self._value is not None

    def reveal(self) -> str | None:
        return self._value

    def redact(self, text: str) -> str:
        return text.replace(self._value, "***") if self._value else text


@dataclass
class OpenAIStats(GenerationStats):
    """GenerationStats plus HTTP counters."""

    requests: int = 0  # HTTP requests sent, retries included
    failed_requests: dict[str, int] = field(default_factory=dict)  # given up, by last reason
    n_fallback_prompts: int = 0  # prompts whose n samples went out one request each


def public_url(url: str) -> str:
    """`url` without user info, query or fragment (where credentials tend to hide)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _excerpt(text: str, limit: int = _MESSAGE_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " ..."


def _server_message(response: httpx.Response) -> str:
    """The human part of an error body: OpenAI's error.message, FastAPI's detail, or text."""
    try:
        data = response.json()
    except ValueError:
        return _excerpt(response.text) or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return _excerpt(str(err["message"]))
        for key in ("error", "detail", "message"):
            if data.get(key):
                return _excerpt(str(data[key]))
    return _excerpt(str(data))


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _split_tokens(total: int, parts: int) -> list[int]:
    """Share a request's completion tokens over its choices (usage is per request only)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _check_prompts(prompts: list[Any], endpoint: str) -> None:
    check_prompts(prompts)  # the check every backend shares
    if endpoint != "completions":
        return
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise PromptError(
                f"prompt {index} is a list of chat messages, but endpoint 'completions' takes "
                "text only: use endpoint 'chat', or render the chat template into a string first"
            )


class OpenAIBackend(BackendBase):
    """Generate through an OpenAI-compatible server. See the module docstring."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        endpoint: str = "chat",
        max_concurrency: int = 16,
        timeout_s: float = 120.0,
        max_retries: int = 6,
        *,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        retry_after_max_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        parts = urlsplit(base_url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, "
                f"got {public_url(base_url or '')!r}"
            )
        if endpoint not in ENDPOINT_PATHS:
            raise ValueError(f"endpoint must be 'chat' or 'completions', got {endpoint!r}")
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        if not model:
            raise ValueError("model must name the served model, got an empty string")
        self.base_url = base_url.rstrip("/")
        self.model_id = model
        self.endpoint = endpoint
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.timeout_s = float(timeout_s)
        self.policy = RetryPolicy(
            max_retries=max_retries,
            backoff_base_s=backoff_base_s,
            backoff_max_s=backoff_max_s,
            retry_after_max_s=retry_after_max_s,
        )
        self.url = self.base_url + ENDPOINT_PATHS[endpoint]
        self.stats = OpenAIStats()
        self._key = _EnvSecret(api_key_env)
        self._transport = transport
        self._n_supported: bool | None = None  # learnt from the first n > 1 request
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._closed = False

    # ------------------------------------------------------------------ public surface

    def __repr__(self) -> str:
        return (
            f"OpenAIBackend(base_url={public_url(self.base_url)!r}, model={self.model_id!r}, "
            f"endpoint={self.endpoint!r}, api_key_env={self.api_key_env!r}, "
            f"api_key={'set' if self._key.present else 'unset'})"
        )

    @property
    def supports_n(self) -> bool | None:
        """True/False once an `n > 1` request has shown it; None before."""
        return self._n_supported

    def describe(self) -> dict[str, Any]:
        """Settings safe to save next to results (the key's variable name, never the key)."""
        return {
            "backend": self.name,
            "base_url": public_url(self.base_url),
            "model": self.model_id,
            "endpoint": self.endpoint,
            "api_key_env": self.api_key_env,
            "max_concurrency": self.max_concurrency,
            "timeout_s": self.timeout_s,
            "max_retries": self.policy.max_retries,
        }

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        """One list of `params.n` completions per prompt, in prompt order."""
        if self._closed:
            raise RuntimeError("OpenAIBackend.generate called after close()")
        prompts = list(prompts)
        _check_prompts(prompts, self.endpoint)
        if not prompts:
            return []
        # The shard's time limit (fdd_core.deadline), read here: the loop below may run in a
        # thread of its own, which does not see the caller's context.
        left = deadline.remaining()
        if left is not None and left <= 0:
            raise deadline.expired_error(
                f"before sending {len(prompts)} prompts to {public_url(self.url)}",
                retryable=True,
                endpoint=public_url(self.url),
            )
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._generate_all(prompts, params, left))
        # Called from code that already runs a loop in this thread: asyncio.run refuses to
        # nest, so our loop gets a thread of its own (the caller blocks, as it asked to).
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fdd-openai") as pool:
            ctx = contextvars.copy_context()  # the limit's message names the shard
            return pool.submit(
                ctx.run, lambda: asyncio.run(self._generate_all(prompts, params, left))
            ).result()

    def close(self) -> None:
        """Nothing stays open between calls (each call owns its client); refuse further use."""
        self._closed = True

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ one generate call

    async def _generate_all(
        self, prompts: list[Prompt], params: SamplingParams, limit_s: float | None = None
    ) -> list[list[Completion]]:
        headers = {"Accept": "application/json"}
        if self._key.present:
            headers["Authorization"] = f"Bearer {self._key.reveal()}"
        limits = httpx.Limits(
            max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
        )
        async with httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(self.timeout_s),
            limits=limits,
            transport=self._transport,
        ) as client:
            call = _Call(client, asyncio.Semaphore(self.max_concurrency), params)
            tasks = [asyncio.ensure_future(self._one_prompt(call, p)) for p in prompts]
            gathered = asyncio.gather(*tasks)
            try:
                if limit_s is None:
                    results = await gathered
                else:
                    results = await asyncio.wait_for(gathered, limit_s)
            except TimeoutError:
                if limit_s is None:  # not ours (a request's own timeout is handled per request)
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise
                # The shard's time limit, not one request's (those are handled per request):
                # stop every request in flight (closing its connection) and hand back what
                # was answered, so the request cache keeps it.
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                partial = [
                    t.result() if t.done() and not t.cancelled() and t.exception() is None else None
                    for t in tasks
                ]
                answered = sum(p is not None for p in partial)
                raise deadline.expired_error(
                    f"while waiting for {public_url(self.url)}: {answered} of {len(prompts)} "
                    f"prompts were answered; the others' requests were stopped",
                    retryable=True,
                    endpoint=public_url(self.url),
                    partial=partial,
                ) from None
            except BaseException:
                # One prompt failed for good: stop the others rather than pay for them.
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        with self._lock:
            self.stats.prompts += len(prompts)
            self.stats.completions += sum(len(r) for r in results)
        return list(results)

    async def _one_prompt(self, call: _Call, prompt: Prompt) -> list[Completion]:
        n = call.params.n
        if n > 1 and self._n_supported is None:
            # Until one answer shows whether the server takes `n`, let a single prompt probe
            # and the others wait, so a server without `n` wastes one request, not dozens.
            if call.n_probe is None:
                call.n_probe = asyncio.Event()
                try:
                    return await self._n_then_per_sample(call, prompt)
                finally:
                    call.n_probe.set()
            await call.n_probe.wait()
        if n > 1 and self._n_supported is False:
            return await self._per_sample(call, prompt)
        return await self._n_then_per_sample(call, prompt)

    async def _n_then_per_sample(self, call: _Call, prompt: Prompt) -> list[Completion]:
        """One request with `n`; per-sample requests when the server will not give n."""
        n = call.params.n
        rejected: OpenAIBackendError | None = None
        try:
            got = await self._request(
                call, prompt, n=n, seed=derive_seed(call.params.seed, prompt, 0)
            )
        except OpenAIBackendError as exc:
            if n == 1 or exc.retryable or exc.status not in _PARAM_REJECTED:
                raise
            rejected = exc  # perhaps only `n` was refused: one request per sample decides
        else:
            if len(got) >= n:
                if n > 1:
                    self._n_supported = True
                return got[:n]
            log.debug(
                "%s answered %d of %d choices; asking per sample", public_url(self.url), len(got), n
            )
        try:
            result = await self._per_sample(call, prompt)
        except OpenAIBackendError as exc:
            if rejected is not None:
                raise exc from rejected
            raise
        self._n_supported = False
        return result

    async def _per_sample(self, call: _Call, prompt: Prompt) -> list[Completion]:
        with self._lock:
            self.stats.n_fallback_prompts += 1
        seeds = [derive_seed(call.params.seed, prompt, i) for i in range(call.params.n)]
        answers = await asyncio.gather(*(self._request(call, prompt, n=1, seed=s) for s in seeds))
        return [a[0] for a in answers]

    # ------------------------------------------------------------------ one HTTP request

    def _body(self, prompt: Prompt, params: SamplingParams, n: int, seed: int | None) -> dict:
        body: dict[str, Any] = {
            "model": self.model_id,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if self.endpoint == "chat":
            body["messages"] = (
                [{"role": "user", "content": prompt}]
                if isinstance(prompt, str)
                else [dict(m) for m in prompt]
            )
        else:
            body["prompt"] = prompt
        if params.stop:
            body["stop"] = list(params.stop)
        if seed is not None:
            body["seed"] = seed
        if n > 1:
            body["n"] = n
        return body

    async def _request(
        self, call: _Call, prompt: Prompt, *, n: int, seed: int | None
    ) -> list[Completion]:
        """POST one body, retrying transient failures; the choices it got, in index order."""
        body = self._body(prompt, call.params, n, seed)
        attempts = self.policy.max_attempts
        last: _Transient | None = None
        for attempt in range(1, attempts + 1):
            try:
                async with call.sem:  # held for the exchange only, not while backing off
                    with self._lock:
                        self.stats.requests += 1
                    data = await asyncio.wait_for(self._post(call.client, body), self.timeout_s)
                return self._parse(data)
            except _Permanent as exc:
                self._count_failure("rejected")
                raise self._permanent_error(exc, attempt) from None
            except _Transient as exc:
                last = exc
            except (asyncio.TimeoutError, httpx.TimeoutException):
                last = _Transient("timeout", f"no complete answer within {self.timeout_s:g} s")
            except (httpx.LocalProtocolError, httpx.UnsupportedProtocol) as exc:
                self._count_failure("rejected")
                local = _Permanent(None, self._key.redact(f"{type(exc).__name__}: {exc}"))
                raise self._permanent_error(local, attempt) from None
            except httpx.TransportError as exc:
                detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                last = _Transient(
                    "connection", f"connection failed or dropped ({self._key.redact(detail)})"
                )
            except httpx.DecodingError as exc:
                last = _Transient("invalid_json", f"undecodable body ({type(exc).__name__})")
            if attempt < attempts:
                with self._lock:
                    self.stats.add_retry(last.reason)
                delay = retry_delay(attempt - 1, self.policy, last.retry_after, self._rng)
                log.debug(
                    "POST %s attempt %d/%d failed (%s); retrying in %.2f s",
                    public_url(self.url),
                    attempt,
                    attempts,
                    last.reason,
                    delay,
                )
                await asyncio.sleep(delay)
        assert last is not None
        self._count_failure(last.reason)
        status = f"HTTP {last.status}" if last.status is not None else last.reason
        raise OpenAIBackendError(
            f"POST {public_url(self.url)} failed after {attempts} attempts "
            f"({self.policy.max_retries} retries); last failure: {status}: {last.detail}",
            path=urlsplit(self.url).path,
            status=last.status,
            attempts=attempts,
            reason=last.reason,
            endpoint=public_url(self.url),
        ) from None

    async def _post(self, client: httpx.AsyncClient, body: dict) -> Any:
        response = await client.post(self.url, json=body)
        status = response.status_code
        if 200 <= status < 300:
            try:
                return response.json()
            except ValueError:
                excerpt = _excerpt(response.text, 120)
                raise _Transient(
                    "invalid_json", self._key.redact(f"HTTP {status} body is not JSON: {excerpt!r}")
                ) from None
        message = self._key.redact(_server_message(response))
        if is_retryable_status(status):
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise _Transient(f"http_{status}", message, status, retry_after)
        raise _Permanent(status, message)

    def _parse(self, data: Any) -> list[Completion]:
        """Choices of a 200 answer as Completions; a body without them is a transient error."""
        if not isinstance(data, dict):
            kind = type(data).__name__
            raise _Transient("bad_response", f"answer is a JSON {kind}, not an object")
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            hint = ""
            if data.get("error"):
                hint = f" (error: {self._key.redact(_excerpt(str(data['error']), 200))})"
            raise _Transient("bad_response", f"answer has no choices{hint}")
        rows = []
        for pos, choice in enumerate(choices):
            if not isinstance(choice, dict):
                raise _Transient("bad_response", f"choice {pos} is not an object")
            if self.endpoint == "chat":
                message = choice.get("message")
                if not isinstance(message, dict):
                    raise _Transient("bad_response", f"choice {pos} has no message")
                text = message.get("content")
            else:
                text = choice.get("text")
            if text is None:
                text = ""  # e.g. a refusal or tool call: nothing usable, but not malformed
            if not isinstance(text, str):
                raise _Transient("bad_response", f"choice {pos} text is not a string")
            index = choice.get("index")
            index = index if isinstance(index, int) and not isinstance(index, bool) else pos
            finish = _FINISH_MAP.get(str(choice.get("finish_reason") or "stop"), "stop")
            rows.append((index, pos, text, finish))
        rows.sort()
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        prompt_tokens = _as_int(usage.get("prompt_tokens"))
        completion_tokens = _as_int(usage.get("completion_tokens"))
        with self._lock:
            self.stats.prompt_tokens += prompt_tokens
            self.stats.completion_tokens += completion_tokens
        shares = _split_tokens(completion_tokens, len(rows))
        return [
            Completion(
                text=text,
                finish_reason=finish,
                prompt_tokens=prompt_tokens,
                completion_tokens=share,
            )
            for (_, _, text, finish), share in zip(rows, shares)
        ]

    # ------------------------------------------------------------------ errors

    def _count_failure(self, reason: str) -> None:
        with self._lock:
            self.stats.failed_requests[reason] = self.stats.failed_requests.get(reason, 0) + 1

    def _permanent_error(self, exc: _Permanent, attempt: int) -> OpenAIBackendError:
        hint = ""
        if exc.status in (401, 403):
            hint = (
                f" (check the API key in the environment variable ${self.api_key_env})"
                if self._key.present
                else f" (the environment variable ${self.api_key_env} is not set)"
            )
        status = f"HTTP {exc.status}" if exc.status is not None else "a local protocol error"
        return OpenAIBackendError(
            f"POST {public_url(self.url)} was rejected with {status}, not retried "
            f"(client errors other than 408/409/429 are permanent): {exc.detail}{hint}",
            path=urlsplit(self.url).path,
            status=exc.status,
            attempts=attempt,
            reason="rejected",
            endpoint=public_url(self.url),
        )
