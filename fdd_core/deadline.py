"""A wall-clock limit on one shard of generation work, enforced by the work itself.

Prefect's task timeouts cannot stop a synchronous function that runs in a worker thread
(the timeout is an exception sent to the thread, which a blocking socket read or a torch
call never sees), so a shard whose teacher server accepts requests and never answers, or
whose in-process model decodes for ever, would hold its worker for good. Instead the task
opens a limit around its work (`limit(seconds, what)`), and the places that can wait check
it: the `openai` backend bounds its whole `generate` call by the time left (cancelling the
requests in flight, which closes their connections), the `hf` backend checks between
decoding steps. Either raises `WorkTimeout`, a `TimeoutError` that says whether a retry may
cure it (waiting on a remote server: yes; an in-process model: no, it would be as slow
again) and carries what was finished before the limit (`partial`), so the request cache
keeps those answers and a retry does not pay for them twice.

The limit lives in a context variable: it follows the task's thread and the event loops it
starts with `asyncio.run`, and code outside any limit sees none.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic() when the time is up
    seconds: float  # the limit as configured
    what: str  # the work it bounds, for the message (a task run name)
    setting: str  # the config key that sets it, for the message

    def remaining(self) -> float:
        return self.at - time.monotonic()


class WorkTimeout(TimeoutError):
    """A shard's work was stopped by its time limit.

    `retryable` follows the task retry contract (docs/reliability.md); `partial` holds one
    entry per prompt of the interrupted `generate` call: its completions when they were
    finished before the limit, else None (or the whole attribute is None when unknown).
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        endpoint: str | None = None,
        partial: list[Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.endpoint = endpoint
        self.partial = partial

    def __reduce__(self):  # keep the attributes across pickling (Prefect stores failures)
        return (
            _rebuild,
            (str(self), self.retryable, self.endpoint, self.partial),
        )


def _rebuild(message, retryable, endpoint, partial) -> WorkTimeout:
    return WorkTimeout(message, retryable=retryable, endpoint=endpoint, partial=partial)


_CURRENT: ContextVar[Deadline | None] = ContextVar("fdd_deadline", default=None)


@contextmanager
def limit(
    seconds: float | None, what: str, setting: str = "orchestration.shard_timeout_s"
) -> Iterator[Deadline | None]:
    """Bound the work inside the block by `seconds` (None: no limit of its own).

    A limit inside another keeps the earlier of the two ends.
    """
    outer = _CURRENT.get()
    if seconds is None:
        token = _CURRENT.set(outer)
    else:
        if not seconds > 0:
            raise ValueError(f"{setting} must be > 0 seconds, got {seconds!r}")
        mine = Deadline(time.monotonic() + float(seconds), float(seconds), what, setting)
        token = _CURRENT.set(mine if outer is None or mine.at < outer.at else outer)
    try:
        yield _CURRENT.get()
    finally:
        _CURRENT.reset(token)


def current() -> Deadline | None:
    return _CURRENT.get()


def remaining() -> float | None:
    """Seconds left under the current limit (may be <= 0), or None without a limit."""
    d = _CURRENT.get()
    return None if d is None else d.remaining()


def expired_error(
    detail: str,
    *,
    retryable: bool,
    endpoint: str | None = None,
    partial: list[Any] | None = None,
) -> WorkTimeout:
    """The error for the current limit having run out (`detail` says where it was)."""
    d = _CURRENT.get()
    if d is None:
        head = "stopped by its time limit"
    else:
        head = f"{d.what}: stopped by its time limit of {d.seconds:g} s ({d.setting})"
    return WorkTimeout(
        f"{head} {detail}".strip(), retryable=retryable, endpoint=endpoint, partial=partial
    )


def check(detail: str = "", *, retryable: bool = False) -> None:
    """Raise `WorkTimeout` when the current limit has run out; nothing without one."""
    d = _CURRENT.get()
    if d is not None and d.remaining() <= 0:
        raise expired_error(detail, retryable=retryable)
