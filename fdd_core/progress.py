"""A small progress bar for long-running loops (generation, sandboxing, training).

A thin wrapper over tqdm that decides once whether to draw anything: never when the caller
passes ``enabled=False`` or the environment sets ``FDD_PROGRESS=0``; in auto mode
(``enabled=None``) only when stderr is a terminal, so logs, CI output and piped runs stay
clean. ``FDD_PROGRESS=1`` forces bars on in auto mode. Bars that finish within ``delay``
seconds never appear at all, so short calls stay quiet even on a terminal.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any


def progress_enabled(enabled: bool | None = None) -> bool:
    """Whether a bar should be drawn, from the caller's wish, FDD_PROGRESS and the terminal."""
    env = os.environ.get("FDD_PROGRESS", "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if enabled is not None:
        return enabled
    if env in ("1", "true", "yes", "on"):
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


class Progress:
    """A counter with an optional tqdm bar and a tokens/s rate shown beside it.

    ``update(n, tokens=k)`` advances by ``n`` units and counts ``k`` generated tokens;
    the rate is tokens over wall time since the bar was created. Usable as a context manager.
    """

    def __init__(
        self,
        total: int | None,
        desc: str = "",
        *,
        unit: str = "it",
        enabled: bool | None = None,
        delay: float = 2.0,
    ) -> None:
        self.total = total
        self.count = 0
        self.tokens = 0
        self._start = time.perf_counter()
        self._bar: Any = None
        if progress_enabled(enabled):
            try:
                from tqdm.auto import tqdm
            except ImportError:  # tqdm is a core dependency, but never fail over a bar
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(
                    total=total, desc=desc, unit=unit, delay=delay, leave=False, dynamic_ncols=True
                )

    @property
    def active(self) -> bool:
        return self._bar is not None

    @property
    def tokens_per_s(self) -> float:
        elapsed = time.perf_counter() - self._start
        return self.tokens / elapsed if elapsed > 0 else 0.0

    def update(self, n: int = 1, *, tokens: int = 0) -> None:
        self.count += n
        self.tokens += tokens
        if self._bar is not None:
            if tokens:
                self._bar.set_postfix_str(f"{self.tokens_per_s:.1f} tok/s", refresh=False)
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
