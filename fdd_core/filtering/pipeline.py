"""The filter: every check on each candidate, in order, with drops counted by reason
(the order and what it misses: see the package docstring, fdd_core/filtering/__init__.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
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


CHUNK = 16384  # candidates checked at once: bounds the memory beyond the kept index


def filter_stream(
    candidates: Iterable[Problem],
    *,
    existing: Sequence[str],
    test_sets: Mapping[str, Sequence[str]],
    cfg: FilteringConfig,
    chunk: int = CHUNK,
) -> Iterator[tuple[Problem, str | None, str | None]]:
    """(candidate, drop reason or None, contaminating benchmark or None), in input order.

    Reads `candidates` lazily, `chunk` at a time: memory is the kept questions' index
    (about 0.5 kB each, see `dedup`) plus one chunk, however many candidates stream by.
    The decisions are those of `filter_problems` on the whole list at once.
    """
    if chunk < 1:
        raise ValueError(f"filter_stream: chunk must be >= 1, got {chunk}")
    dedup = Deduplicator(existing, cfg)
    decon = (
        Decontaminator(test_sets, cfg)
        if cfg.decontaminate and any(len(v) for v in test_sets.values())
        else None
    )
    it = iter(candidates)
    while batch := list(islice(it, chunk)):
        reasons, benchmarks = _check_batch(batch, dedup, decon, cfg)
        yield from zip(batch, reasons, benchmarks)


def _check_batch(
    batch: Sequence[Problem],
    dedup: Deduplicator,
    decon: Decontaminator | None,
    cfg: FilteringConfig,
) -> tuple[list[str | None], list[str | None]]:
    reasons: list[str | None] = [basic_check(p.question, cfg) for p in batch]
    benchmarks: list[str | None] = [None] * len(batch)
    alive = [i for i, r in enumerate(reasons) if r is None]
    if not alive:
        return reasons, benchmarks
    enc = _encode([batch[i].question for i in alive], dedup.hasher, dedup.index)
    if decon is not None:
        for row, hit in enumerate(decon._check_encoded(enc)):
            if hit is not None:
                reasons[alive[row]], benchmarks[alive[row]] = hit
    rows = [row for row, i in enumerate(alive) if reasons[i] is None]
    for row, reason in zip(rows, dedup._check_and_add_rows(enc, rows)):
        reasons[alive[row]] = reason
    return reasons, benchmarks


def filter_problems(
    candidates: Sequence[Problem],
    *,
    existing: Sequence[str],
    test_sets: Mapping[str, Sequence[str]],
    cfg: FilteringConfig,
) -> FilterResult:
    """Keep the candidates that pass every check (see the module docstring), in input order."""
    reasons: list[str | None] = []
    benchmarks: list[str | None] = []
    for _, reason, bench in filter_stream(
        candidates, existing=existing, test_sets=test_sets, cfg=cfg
    ):
        reasons.append(reason)
        benchmarks.append(bench)
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
