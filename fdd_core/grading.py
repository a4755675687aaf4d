"""Grading numeric answers: parse a number out of text, compare with tolerance, vote.

- `parse_number` reads reference answers (GSM8K's ``#### 72``, SVAMP floats, ASDiv's
  ``9 (apples)``) and free-form model output. It never raises: anything it cannot read is
  None. Where to look, in order: after the last ``####``; inside the last ``\\boxed{}``;
  the first number after the last "answer is" / "answer:"; otherwise the last number in
  the text. What a number may look like: ``-2``, ``1,234``, ``$1,234.50``, ``.5``,
  ``1.5e3``, ``3/4`` (a fraction: 0.75), LaTeX ``\\frac{3}{4}``, ``50%``.
  Choice: a percentage is the number as written, ``50%`` -> 50.0 (not 0.5), because
  GSM8K-style references state percentages that way (``#### 50``).
  Not read: numbers in words ("eighteen"), mixed numbers (``1 1/2`` is two numbers),
  space-separated thousands (``1 000``), non-finite values (None). ``a/b`` is always a
  fraction, so a date like ``12/25`` reads as 0.48.
- `answers_match`: both finite and within `rel_tol` or `abs_tol` (math.isclose).
- `majority_vote`: answers within `rel_tol` of a bucket's first answer join that bucket;
  the biggest bucket wins, ties go to the bucket seen first; `agreement` is its count over
  *all* answers, failed programs (None) included.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
# A number not glued to a word or a decimal point on its left, with an optional sign right
# before it ("8 - 3" holds 8 and 3, not -3), currency, "/denominator" and exponent. Units
# may follow ("5kg"); a percent sign is simply not part of the number.
_NUMBER = re.compile(
    rf"(?<![\w.])(?P<sign>[-+\u2212\u2013]?)(?:[$\u20ac\u00a3\u00a5][ \t]?)?"
    rf"(?P<a>{_NUM})(?:[ \t]*/[ \t]*(?P<b>{_NUM}))?(?:[eE](?P<exp>[-+]?\d{{1,4}}))?"
)
_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_ANSWER_IS = re.compile(r"answer\s*(?:is|was|:|=)\s*[:=]?", re.IGNORECASE)
_LATEX_FRAC = re.compile(r"\\d?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_LATEX_NOISE = re.compile(r"\\[,!;: ]|\\left|\\right|\\text\{[^{}]*\}|\{,\}")

ABS_TOL = 1e-6


def parse_number(text: str | float | int | None) -> float | None:
    """The numeric answer in `text` (see the module docstring), or None. Never raises."""
    try:
        return _parse(text)
    except Exception:  # a parser of model output must not sink a batch
        return None


def _parse(text) -> float | None:
    if text is None or isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return _finite(float(text))
    if not isinstance(text, str):
        return None
    if "####" in text:
        return _first_number(text.rsplit("####", 1)[1])
    boxed = _BOXED.findall(text)
    if boxed:
        return _first_number(boxed[-1])
    marks = list(_ANSWER_IS.finditer(text))
    if marks:
        found = _first_number(text[marks[-1].end() :])
        if found is not None:
            return found
    numbers = [_value(m) for m in _NUMBER.finditer(_clean(text))]
    numbers = [n for n in numbers if n is not None]
    return numbers[-1] if numbers else None


def _clean(text: str) -> str:
    text = _LATEX_FRAC.sub(r"\1/\2", text)
    return _LATEX_NOISE.sub("", text).replace("\\$", "$").replace("\\%", "%")


def _first_number(text: str) -> float | None:
    for match in _NUMBER.finditer(_clean(text)):
        value = _value(match)
        if value is not None:
            return value
    return None


def _value(match: re.Match) -> float | None:
    value = float(match["a"].replace(",", ""))
    if match["b"] is not None:
        denominator = float(match["b"].replace(",", ""))
        if denominator == 0:
            return None
        value /= denominator
    if match["exp"] is not None:
        try:
            value *= 10.0 ** int(match["exp"])
        except OverflowError:
            return None
    if match["sign"] in ("-", "\u2212", "\u2013"):
        value = -value
    return _finite(value)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def answers_match(
    pred: float | None, ref: float | None, rel_tol: float = 1e-4, abs_tol: float = ABS_TOL
) -> bool:
    """True when both are finite numbers within `rel_tol` (relative) or `abs_tol`.

    Only numbers compare (int, float, Fraction, Decimal, numpy scalars): None, a bool or
    a string such as "18" never matches; parse text with `parse_number` first.
    """
    a, b = _as_float(pred), _as_float(ref)
    if a is None or b is None:
        return False
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)


def _as_float(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, Decimal)):
        return None
    try:
        return _finite(float(value))
    except (OverflowError, ValueError):
        return None


@dataclass(frozen=True)
class Vote:
    """The winning answer of a vote and how many of all the programs gave it."""

    answer: float | None
    count: int
    total: int
    agreement: float  # count / total; total counts failed programs (None) too


def majority_vote(answers: Sequence[float | None], rel_tol: float = 1e-4) -> Vote:
    """The most common answer (within tolerance); ties go to the answer seen first."""
    buckets: list[list] = []  # [representative, count], in order of first appearance
    for answer in answers:
        if _as_float(answer) is None:  # a failed program (None), NaN, inf, not a number
            continue
        for bucket in buckets:
            if answers_match(answer, bucket[0], rel_tol=rel_tol):
                bucket[1] += 1
                break
        else:
            buckets.append([float(answer), 1])
    total = len(answers)
    if not buckets:
        return Vote(answer=None, count=0, total=total, agreement=0.0)
    best = max(buckets, key=lambda b: b[1])  # max keeps the first of equal counts
    return Vote(answer=best[0], count=best[1], total=total, agreement=best[1] / total)


def gsm8k_answer(answer_field: str) -> float | None:
    """The reference answer of a GSM8K row: the number after '####' (None if absent)."""
    if not isinstance(answer_field, str) or "####" not in answer_field:
        return None
    return parse_number(answer_field)
