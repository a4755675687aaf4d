"""Retry timing for HTTP backends: exponential backoff with full jitter, and Retry-After.

Pure functions over a small frozen `RetryPolicy`, so the timing rules are testable without
a network or a clock. "Full jitter" (a uniform draw between 0 and the exponential ceiling)
spreads the retries of many clients that failed together, so they do not hit a recovering
server in lock-step; a server's own `Retry-After` wins over the draw, capped so a
misconfigured server cannot park a worker for hours.
"""

from __future__ import annotations

import email.utils
import math
import random
from dataclasses import dataclass
from datetime import datetime, timezone

# Statuses worth another try: request timeout, conflict (OpenAI documents 409 as
# retryable), rate limit, and every server-side error.
RETRYABLE_4XX = frozenset({408, 409, 429})


def is_retryable_status(status: int) -> bool:
    """True for HTTP statuses that are transient by nature (408, 409, 429, 5xx)."""
    return status in RETRYABLE_4XX or 500 <= status <= 599


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait between attempts of one request."""

    max_retries: int = 6
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {self.max_retries!r}")
        for name in ("backoff_base_s", "backoff_max_s", "retry_after_max_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1


def backoff_ceiling(retry_index: int, policy: RetryPolicy) -> float:
    """The largest wait before retry number `retry_index` (0 for the first retry)."""
    # min() before the power would overflow for large indices; 2**60 is plenty.
    exponent = min(max(retry_index, 0), 60)
    return min(policy.backoff_max_s, policy.backoff_base_s * (2.0**exponent))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), else None.

    Never raises: a header that is neither form is ignored (None), and a date in the past
    means "now" (0.0).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is not None:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def retry_delay(
    retry_index: int,
    policy: RetryPolicy,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to sleep before retry `retry_index`: Retry-After (capped) or full jitter."""
    if retry_after_s is not None:
        return min(max(retry_after_s, 0.0), policy.retry_after_max_s)
    draw = (rng or random).random()
    return draw * backoff_ceiling(retry_index, policy)
