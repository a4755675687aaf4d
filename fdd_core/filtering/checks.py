"""Sanity and length checks of one question, and the word tokenizer the filter shares."""

from __future__ import annotations

import re

from fdd_core.config import FilteringConfig
from fdd_core.schemas import normalize_text

_MAX_NONPRINTABLE_SHARE = 0.1
# Strings that never belong in a word problem but often leak out of a model's completion.
_ARTIFACT_SUBSTRINGS = ("```", "<|", "|>", "</s>", "<s>", "[inst]", "[/inst]")  # lower case
_ARTIFACT_PREFIXES = (
    "answer:",
    "solution:",
    "program:",
    "def ",
    "import ",
    "ans =",
    "ans=",
    "print(",
)
_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")  # an unfilled prompt slot
_TOKEN = re.compile(r"\w+(?:[.,'/:]\w+)*")
_LETTER = re.compile(r"[^\W\d_]")
_DIGIT = re.compile(r"\d")


def basic_check(question: object, cfg: FilteringConfig) -> str | None:
    """The sanity and length checks: a drop reason, or None when the text may go on."""
    if not isinstance(question, str):
        return "malformed"
    text = question.strip()
    if not text or not _LETTER.search(text) or not _DIGIT.search(text):
        return "malformed"
    if _nonprintable_share(text) > _MAX_NONPRINTABLE_SHARE:
        return "malformed"
    lowered = text.lower()
    if any(s in lowered for s in _ARTIFACT_SUBSTRINGS):
        return "malformed"
    if lowered.startswith(_ARTIFACT_PREFIXES) or _PLACEHOLDER.search(text):
        return "malformed"
    if len(text) < cfg.min_chars:
        return "too_short"
    if len(text) > cfg.max_chars:
        return "too_long"
    return None


def _nonprintable_share(text: str) -> float:
    if text.isprintable() and "\ufffd" not in text:  # the common case, checked in C
        return 0.0
    bad = sum(1 for c in text if c == "\ufffd" or (not c.isprintable() and c not in "\n\t\r"))
    return bad / len(text)


def tokenize(text: str) -> list[str]:
    """Word tokens of the normalised text; punctuation between words is dropped."""
    return _TOKEN.findall(normalize_text(text))
