"""Stop strings: detect them in a row's continuation at little per-step cost, and cut the
returned text at the earliest one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class _StopChecker:
    """Detects stop strings in a row's continuation at little per-step cost."""

    def __init__(self, tokenizer: Any, stops: tuple[str, ...]) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        # Every non-special token carries at least one byte, so a stop string that ends at
        # the newest token lies within this many trailing tokens (plus slack for a tail that
        # starts mid-character or loses a leading space when decoded alone).
        self.tail = max(len(s.encode()) for s in stops) + 4
        self.last_chars = {s[-1] for s in stops}
        # SentencePiece tokenizers drop a token's leading space when it is decoded alone, so
        # for a stop string ending in whitespace any token may complete it: check every step.
        self.every_step = any(c.isspace() for c in self.last_chars)
        self._candidate: dict[int, bool] = {}

    def could_complete(self, token: int) -> bool:
        if self.every_step:
            return True
        hit = self._candidate.get(token)
        if hit is None:
            piece = self.tokenizer.decode([token])
            hit = not piece or "\ufffd" in piece or any(c in piece for c in self.last_chars)
            self._candidate[token] = hit
        return hit

    def found(self, tokens: list[int]) -> bool:
        text = self.tokenizer.decode(tokens[-self.tail :], skip_special_tokens=True)
        return any(s in text for s in self.stops)


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Text before the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
