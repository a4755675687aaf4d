"""Synthesis strategies pick exactly the parents they should, at an equal teacher budget.

A scripted grade table: 10 pool problems p0..p9, the student solved p0, p2, p4, p6 (easy),
failed the other six (hard). With n_complex=2 and n_similar=3, fdd asks 4*2 + 6*3 = 26 new
problems: that is the default budget every strategy spends.
"""

from __future__ import annotations

import pytest

from fdd_core.config import STRATEGIES, RunConfig, SynthesisConfig
from fdd_core.schemas import Problem
from fdd_core.strategies import plan_synthesis, spread

POOL = [Problem.create(f"Question number {i}: how many apples?", i) for i in range(10)]
IDS = [p.id for p in POOL]
EASY = {IDS[i] for i in (0, 2, 4, 6)}
HARD_IDS = [IDS[i] for i in (1, 3, 5, 7, 8, 9)]
EASY_IDS = [IDS[i] for i in (0, 2, 4, 6)]


def plan(strategy, **kw):
    kw.setdefault("n_complex", 2)
    kw.setdefault("n_similar", 3)
    return plan_synthesis(strategy, POOL, EASY, **kw)


def picks(p, kind):
    return [(r.parent_id, r.count) for r in p.of_kind(kind)]


def test_fdd_default_is_todays_behaviour():
    p = plan("fdd")
    assert picks(p, "complex") == [(i, 2) for i in EASY_IDS]
    assert picks(p, "similar") == [(i, 3) for i in HARD_IDS]
    assert p.budget == p.requested == 26
    assert p.stats()["budget_unspent"] == 0


def test_every_strategy_but_none_spends_the_same_default_budget():
    requested = {s: plan(s).requested for s in STRATEGIES}
    assert requested == {s: (0 if s == "none" else 26) for s in STRATEGIES}


def test_errors_only_and_similar_only_take_the_failed_problems_only():
    for s in ("errors_only", "similar_only"):
        p = plan(s)
        assert p.of_kind("complex") == []
        # 26 problems over 6 hard parents: 5, 5, 4, 4, 4, 4 in pool order.
        assert picks(p, "similar") == list(zip(HARD_IDS, [5, 5, 4, 4, 4, 4]))


def test_complex_only_takes_the_solved_problems_only():
    p = plan("complex_only")
    assert p.of_kind("similar") == []
    assert picks(p, "complex") == list(zip(EASY_IDS, [7, 7, 6, 6]))


def test_uniform_is_seeded_random_with_fdds_mix():
    a, b, c = plan("uniform", seed=1), plan("uniform", seed=1), plan("uniform", seed=2)
    assert a == b and a != c
    # fdd's mix: 4 complex requests of 2, 6 similar requests of 3.
    assert [r.count for r in a.of_kind("complex")] == [2] * 4
    assert [r.count for r in a.of_kind("similar")] == [3] * 6
    parents = [r.parent_id for r in a.requests]
    assert len(set(parents)) == 10 and set(parents) == set(IDS)  # drawn without replacement
    # Regardless of grade: the complex parents are not simply the easy ones.
    seeds_where_complex_is_easy = [
        s
        for s in range(20)
        if {r.parent_id for r in plan("uniform", seed=s).of_kind("complex")} == EASY
    ]
    assert len(seeds_where_complex_is_easy) < 3


def test_none_adds_nothing():
    p = plan("none")
    assert p.requests == [] and p.requested == 0
    assert plan("none", budget=50).requests == []


@pytest.mark.parametrize("budget", [0, 1, 7, 26, 40, 101])
@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "none"])
def test_an_explicit_budget_is_spent_exactly(strategy, budget):
    p = plan(strategy, budget=budget, seed=3)
    assert p.budget == budget
    assert p.requested == budget
    assert all(r.count >= 1 for r in p.requests)
    assert len({(r.parent_id, r.kind) for r in p.requests}) == len(p.requests)


def test_fdd_budget_keeps_the_kinds_in_proportion():
    p = plan("fdd", budget=13)  # half of the default 26: 8/26 of it complex
    assert p.stats()["complex_requested"] == 4 and p.stats()["similar_requested"] == 9
    assert picks(p, "complex") == [(i, 1) for i in EASY_IDS]
    assert picks(p, "similar") == list(zip(HARD_IDS, [2, 2, 2, 1, 1, 1]))


def test_max_parents_caps_every_strategy():
    for s in ("fdd", "errors_only", "complex_only", "uniform"):
        p = plan(s, max_parents=3)
        assert len(p.requests) <= 3, s
    # fdd's capped demand (1 easy * 2 + 2 hard * 3) is the default budget of every strategy.
    assert {plan(s, max_parents=3).requested for s in ("fdd", "errors_only", "uniform")} == {8}


def test_no_eligible_parent_leaves_the_budget_unspent():
    p = plan_synthesis("errors_only", POOL, set(IDS), n_complex=2, n_similar=3)
    assert p.requests == [] and p.budget == 20 and p.stats()["budget_unspent"] == 20


def test_spread():
    assert spread(7, 3) == [3, 2, 2]
    assert spread(2, 5) == [1, 1]
    assert spread(0, 3) == [] and spread(5, 0) == []


def test_unknown_strategy_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="errors_only"):
        plan("bogus")


def test_config_fields():
    assert SynthesisConfig().strategy == "fdd" and SynthesisConfig().budget is None
    cfg = RunConfig.model_validate({"synthesis": {"strategy": "uniform", "budget": 12}})
    assert cfg.synthesis.strategy == "uniform"
    with pytest.raises(ValueError):
        RunConfig.model_validate({"synthesis": {"strategy": "bogus"}})


def test_synthesis_asks_each_parent_for_its_planned_count():
    from fdd_core.config import TeacherConfig
    from fdd_core.stages import synthesize_problems
    from tests.servers.scripted_teacher import world_question
    from tests.test_stages import ScriptedBackend

    parents = [Problem.create(world_question(f"p{i}", 2), 0) for i in range(3)]
    out, stats = synthesize_problems(
        parents,
        ["similar", "similar", "complex"],
        ScriptedBackend(),
        TeacherConfig(backend="openai", base_url="http://x/v1"),
        SynthesisConfig(),
        round_index=1,
        counts=[1, 3, 2],
    )
    per_parent = {p.id: sum(q.parent_id == p.id for q in out) for p in parents}
    assert list(per_parent.values()) == [1, 3, 2]
    assert stats["similar_generated"] == 4 and stats["complex_generated"] == 2
