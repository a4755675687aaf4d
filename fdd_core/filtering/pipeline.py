"""The filter: every check on each candidate, in order, with drops counted by reason
(the order and what it misses: see the package docstring, fdd_core/filtering/__init__.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from fdd_core.config import FilteringConfig
from fdd_core.filtering.checks import basic_check
from fdd_core.filtering.decontam import Decontaminator
from fdd_core.filtering.dedup import Deduplicator
from fdd_core.filtering.minhash import _encode
from fdd_core.schemas import Problem

DropReason = Literal[
    "malformed",
    "too_short",
    "too_long",
    "duplicate_exact",
    "duplicate_near",
    "contaminated_ngram",
    "contaminated_near",
]
DROP_REASONS: tuple[str, ...] = DropReason.__args__  # type: ignore[attr-defined]
MAX_EXAMPLES_PER_REASON = 3


@dataclass
class FilterResult:
    kept: list[Problem]
    dropped: dict[str, int]  # every DropReason, zero when nothing was dropped for it
    examples: dict[str, list[str]]  # up to MAX_EXAMPLES_PER_REASON dropped questions a reason
    by_benchmark: dict[str, int] = field(default_factory=dict)  # contamination drops
    # Per candidate, in input order: the drop reason (None: kept) and, for contamination,
    # the benchmark (the run report's per-candidate verdicts).
    reasons: list[str | None] = field(default_factory=list)
    benchmarks: list[str | None] = field(default_factory=list)

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())


def filter_problems(
    candidates: Sequence[Problem],
    *,
    existing: Sequence[str],
    test_sets: Mapping[str, Sequence[str]],
    cfg: FilteringConfig,
) -> FilterResult:
    """Keep the candidates that pass every check (see the module docstring), in input order."""
    reasons: list[str | None] = [basic_check(p.question, cfg) for p in candidates]
    benchmarks: list[str | None] = [None] * len(candidates)
    alive = [i for i, r in enumerate(reasons) if r is None]

    dedup = Deduplicator(existing, cfg)
    enc = _encode([candidates[i].question for i in alive], dedup.hasher, dedup.index)
    if cfg.decontaminate and any(len(v) for v in test_sets.values()):
        decon = Decontaminator(test_sets, cfg)
        for row, hit in enumerate(decon._check_encoded(enc)):
            if hit is not None:
                reasons[alive[row]], benchmarks[alive[row]] = hit
    rows = [row for row, i in enumerate(alive) if reasons[i] is None]
    for row, reason in zip(rows, dedup._check_and_add_rows(enc, rows)):
        reasons[alive[row]] = reason
    return _summarize(candidates, reasons, benchmarks)


def _summarize(
    candidates: Sequence[Problem], reasons: list[str | None], benchmarks: list[str | None]
) -> FilterResult:
    dropped = dict.fromkeys(DROP_REASONS, 0)
    examples: dict[str, list[str]] = {r: [] for r in DROP_REASONS}
    kept = []
    for problem, reason in zip(candidates, reasons):
        if reason is None:
            kept.append(problem)
            continue
        dropped[reason] += 1
        if len(examples[reason]) < MAX_EXAMPLES_PER_REASON:
            text = problem.question if isinstance(problem.question, str) else repr(problem.question)
            examples[reason].append(text[:300])
    by_benchmark = dict(sorted(Counter(b for b in benchmarks if b is not None).items()))
    return FilterResult(
        kept,
        dropped,
        {r: v for r, v in examples.items() if v},
        by_benchmark,
        list(reasons),
        list(benchmarks),
    )
