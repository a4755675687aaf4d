"""The inference interface every backend implements (teacher and student alike).

Three names, after vLLM's offline API: `SamplingParams` (validated), `Completion` (a frozen
value) and `Backend.generate(prompts, params) -> list[list[Completion]]` (one list per
prompt, `params.n` completions each, in prompt order). A prompt is raw text or a list of
chat messages ``[{"role": "user", "content": "..."}]``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

ChatMessage = dict[str, str]
Prompt: TypeAlias = str | list[ChatMessage]

FinishReason = Literal["stop", "length", "error"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. temperature == 0 means greedy, which allows only n == 1."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n must be an integer >= 1, got {self.n!r}")
        if not 0.0 <= self.temperature <= 5.0:
            raise ValueError(f"temperature must be in [0, 5], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop must hold non-empty strings, got {self.stop!r}")
        if self.greedy and self.n > 1:
            raise ValueError(
                f"greedy decoding (temperature=0) gives one answer: n must be 1, got {self.n}; "
                "set temperature > 0 to draw several samples"
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def key(self) -> dict:
        """The fields that decide the output (used in cache keys)."""
        return {
            "n": self.n,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "stop": list(self.stop),
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Completion:
    """One generated continuation."""

    text: str
    finish_reason: FinishReason = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0


@runtime_checkable
class Backend(Protocol):
    """What the FDD stages and tasks see. They never know which backend runs.

    `BackendBase` gives the members a backend need not customise (describe, closed,
    batch_size, with_batch_size); a backend only has to write `generate` and `close`.
    """

    name: str  # "hf", "openai", "vllm"
    model_id: str  # what is served (used in cache keys and provenance)
    # Sequences per forward batch for backends that batch in this process, else None.
    batch_size: int | None

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams
    ) -> list[list[Completion]]: ...

    def describe(self) -> dict[str, Any]:
        """Settings worth saving next to results (never a secret)."""
        ...

    def with_batch_size(self, batch_size: int) -> Backend:
        """This backend with another `batch_size` (sharing loaded weights)."""
        ...

    @property
    def closed(self) -> bool: ...

    def close(self) -> None: ...


class BackendBase:
    """Defaults for the `Backend` members most backends do not need to change."""

    name: str = "?"
    model_id: str = "?"
    batch_size: int | None = None
    _closed: bool = False

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_id}

    def with_batch_size(self, batch_size: int) -> Backend:
        """Backends that do not batch here ignore the batch size."""
        return self  # type: ignore[return-value]

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True


class PromptError(ValueError, TypeError):
    """A prompt that is neither text nor a list of chat messages (a caller's bug).

    A ValueError and a TypeError, so code that caught either from one backend still does.
    """


def check_prompts(prompts: Sequence[Any]) -> None:
    """The one prompt check every backend runs before it sends or encodes anything.

    A prompt is a string or a non-empty list of ``{'role': str, 'content': str}`` dicts;
    the error names the prompt's index (and the message's) in the call.
    """
    for index, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            continue
        if not isinstance(prompt, list) or not prompt:
            raise PromptError(
                f"prompt {index}: a prompt is a string or a list of chat messages like "
                f"{{'role': 'user', 'content': '...'}}; got {prompt!r:.120}"
            )
        for j, msg in enumerate(prompt):
            if not (
                isinstance(msg, dict)
                and isinstance(msg.get("role"), str)
                and isinstance(msg.get("content"), str)
            ):
                raise PromptError(
                    f"prompt {index}, message {j}: a prompt is a string or a list of chat "
                    f"messages like {{'role': 'user', 'content': '...'}}; got {msg!r:.120}"
                )


def prompt_key(prompt: Prompt) -> str:
    """A canonical string for a prompt (text or chat messages)."""
    if isinstance(prompt, str):
        return "text:" + prompt
    return "chat:" + json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def derive_seed(seed: int | None, prompt: Prompt, sample_index: int = 0) -> int | None:
    """A per-prompt (and per-sample) seed, independent of batch position and shard.

    Mixing the prompt into the seed keeps results stable when prompts move between shards,
    and gives each sample of `n` its own stream when a server takes one seed per request.
    """
    if seed is None:
        return None
    digest = hashlib.sha256(f"{seed}|{sample_index}|{prompt_key(prompt)}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass
class GenerationStats:
    """Counters a backend may expose (retries, tokens) for reports."""

    prompts: int = 0
    completions: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: dict[str, int] = field(default_factory=dict)

    def add_retry(self, reason: str) -> None:
        self.retries[reason] = self.retries.get(reason, 0) + 1


# ---------------------------------------------------------------------- the retry contract


class BackendError(RuntimeError):
    """A backend failure that says whether a retry may cure it.

    `retryable` is the one thing the task retry condition reads (`tasks.common.is_transient`):
    True for a passing fault that outlasted the backend's own retries (a server restarting,
    timeouts, 429/5xx), False for one no retry will fix (a rejected request, bad config).
    `endpoint` names where the backend was talking to (None for in-process backends), so a
    log line can say what it is waiting for. Subclasses add their own details (HTTP status,
    attempts, reason) as attributes.
    """

    def __init__(self, message: str, *, retryable: bool, endpoint: str | None = None) -> None:
        super().__init__(message)
        self.retryable = bool(retryable)
        self.endpoint = endpoint

    def __reduce__(self):
        # Keyword-only arguments do not survive the default exception pickling, and Prefect
        # pickles a failed task's exception into its result store.
        return (_rebuild_error, (type(self), str(self), dict(self.__dict__)))


def _rebuild_error(cls: type, message: str, state: dict) -> BaseException:
    err = cls.__new__(cls)
    RuntimeError.__init__(err, message)
    err.__dict__.update(state)
    return err


def retry_verdict(exc: BaseException) -> bool | None:
    """What an exception says about retrying: its boolean `retryable`, else None (unknown)."""
    value = getattr(exc, "retryable", None)
    return value if isinstance(value, bool) else None


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's accelerator out-of-memory error (checked without importing torch).

    Classified as permanent by the task retry condition: a retry runs the same batch on the
    same device in the same process (which still holds the memoized models), so it would
    fail the same way after waiting; the error should reach the user, who lowers
    `batch_size` or `max_tokens` or moves work to a bigger device.
    """
    import sys

    torch = sys.modules.get("torch")  # torch was imported if a torch error was raised
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(
        getattr(torch, "cuda", None), "OutOfMemoryError", None
    )
    return isinstance(oom, type) and isinstance(exc, oom)
