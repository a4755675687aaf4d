"""Synthesis strategies: which graded problems the teacher writes new problems from, and how many.

A round's plan is a list of requests (parent, kind, count): "write `count` new problems of
`kind` from this parent". Every strategy spends the same per-round budget, counted in new
problems asked of the teacher, so strategies compare at equal teacher cost:

- `fdd` (default): complex variations of easy (solved) problems, similar problems for hard
  (failed) ones, `n_complex` / `n_similar` per parent (today's FDD behaviour).
- `errors_only` (LLM2LLM's rule): similar problems for the failed problems only.
- `similar_only`, `complex_only`: FDD's two branches alone (ablations). `similar_only` picks
  exactly what `errors_only` picks; the two names are kept because they answer different
  questions (a published baseline, an FDD ablation).
- `uniform` ("more data, no feedback"): parents drawn at random (seeded) from the whole pool,
  whatever their grade, with the same mix of complex and similar requests that `fdd` makes.
- `none`: no synthesis; the round's dataset is the one it already has (D0), so its student
  is round 0's, reused rather than trained again on the same data (flows/round.py).

The budget (`synthesis.budget`; None means what `fdd` asks this round, i.e.
easy * n_complex + hard * n_similar after `max_parents_per_round`) is spread evenly over a
strategy's eligible parents: with fewer parents than `fdd` has, each parent is asked for more
problems, so the total asked is the same. A strategy with no eligible parent (e.g.
`errors_only` when the student solves everything) spends nothing; the plan says so
(`budget_unspent`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from fdd_core.config import STRATEGIES, Strategy
from fdd_core.schemas import Problem
from fdd_core.stages import GradeRow, split_by_grade

# Strategies whose parents do not depend on the grade (grading may be skipped for them
# when synthesis.grade_unused is false). `uniform` needs the grade for fdd's mix.
GRADE_FREE = ("none",)


class Request(BaseModel):
    """Ask the teacher for `count` new problems of `kind` from one parent."""

    model_config = ConfigDict(frozen=True)
    parent_id: str
    kind: Literal["complex", "similar"]
    count: int


class Plan(BaseModel):
    """A round's synthesis requests and the budget they spend."""

    model_config = ConfigDict(frozen=True)
    strategy: str
    budget: int
    requests: list[Request]

    @property
    def requested(self) -> int:
        return sum(r.count for r in self.requests)

    def of_kind(self, kind: str) -> list[Request]:
        return [r for r in self.requests if r.kind == kind]

    def stats(self) -> dict[str, int]:
        return {
            "budget": self.budget,
            "requested": self.requested,
            "budget_unspent": self.budget - self.requested,
            "complex_parents": len(self.of_kind("complex")),
            "similar_parents": len(self.of_kind("similar")),
            "complex_requested": sum(r.count for r in self.of_kind("complex")),
            "similar_requested": sum(r.count for r in self.of_kind("similar")),
        }


def spread(budget: int, n_parents: int) -> list[int]:
    """`budget` new problems over `n_parents` parents as evenly as possible (zeros dropped)."""
    if n_parents <= 0 or budget <= 0:
        return []
    base, extra = divmod(budget, n_parents)
    counts = [base + (1 if i < extra else 0) for i in range(n_parents)]
    return [c for c in counts if c > 0]


def _requests(parents: Sequence[Problem], kind: str, counts: Sequence[int]) -> list[Request]:
    return [Request(parent_id=p.id, kind=kind, count=c) for p, c in zip(parents, counts)]


def _fdd_counts(
    n_easy: int, n_hard: int, n_complex: int, n_similar: int, budget: int
) -> tuple[list[int], list[int]]:
    """fdd's per-parent counts at `budget`: kinds share it in proportion to fdd's own demand."""
    demand_c, demand_s = n_easy * n_complex, n_hard * n_similar
    demand = demand_c + demand_s
    if demand == 0:
        return [], []
    if budget == demand:  # the default: exactly today's c per easy, s per hard parent
        return [n_complex] * (n_easy if n_complex else 0), [n_similar] * (
            n_hard if n_similar else 0
        )
    budget_c = round(budget * demand_c / demand)
    return spread(budget_c, n_easy if n_complex else 0), spread(
        budget - budget_c, n_hard if n_similar else 0
    )


def plan_synthesis(
    strategy: str,
    pool: Sequence[Problem],
    easy_ids: set[str],
    *,
    n_complex: int,
    n_similar: int,
    budget: int | None = None,
    max_parents: int | None = None,
    seed: int = 0,
) -> Plan:
    """The round's requests for `strategy`, from the graded pool (`easy_ids` = solved)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown synthesis strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
    rows = [
        GradeRow(
            problem_id=p.id, n_correct=int(p.id in easy_ids), n_samples=1, easy=p.id in easy_ids
        )
        for p in pool
    ]
    # fdd's parents (with today's cap) define the default budget and uniform's mix.
    easy, hard = split_by_grade(pool, rows, max_parents=max_parents)
    demand = len(easy) * n_complex + len(hard) * n_similar
    spend = demand if budget is None else budget
    if strategy == "none":
        return Plan(strategy=strategy, budget=0 if budget is None else budget, requests=[])

    def capped(items: list[Problem]) -> list[Problem]:
        return items[:max_parents] if max_parents is not None else items

    if strategy in ("fdd", "uniform"):
        c_counts, s_counts = _fdd_counts(len(easy), len(hard), n_complex, n_similar, spend)
        if strategy == "fdd":
            reqs = _requests(easy, "complex", c_counts) + _requests(hard, "similar", s_counts)
        else:
            drawn = random.Random(seed).sample(list(pool), len(c_counts) + len(s_counts))
            reqs = _requests(drawn[: len(c_counts)], "complex", c_counts) + _requests(
                drawn[len(c_counts) :], "similar", s_counts
            )
    elif strategy == "complex_only":
        parents = capped([p for p in pool if p.id in easy_ids])
        reqs = _requests(parents, "complex", spread(spend, len(parents)))
    else:  # errors_only, similar_only
        parents = capped([p for p in pool if p.id not in easy_ids])
        reqs = _requests(parents, "similar", spread(spend, len(parents)))
    return Plan(strategy=strategy, budget=spend, requests=reqs)


__all__ = ["GRADE_FREE", "STRATEGIES", "Plan", "Request", "Strategy", "plan_synthesis", "spread"]
