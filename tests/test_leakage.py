"""Leakage scores (fdd_core.leakage) against a brute-force computation of the same sets."""

from __future__ import annotations

import random

from fdd_core.config import FilteringConfig
from fdd_core.filtering import filter_problems, tokenize
from fdd_core.leakage import leakage_scores, max_ngram_overlap
from fdd_core.schemas import Problem

CFG = FilteringConfig(ngram_n=4, shingle_size=3)
WORDS = "tom ana has buys sells apples pears more fewer each box of the and 3 5 7 12".split()


def _grams(text: str, n: int, short_whole: bool) -> set[tuple[str, ...]]:
    toks = tokenize(text)
    if len(toks) < n:
        return {tuple(toks)} if short_whole else set()
    return {tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)}


def _brute(q: str, refs: list[str]) -> tuple[float, float]:
    g = _grams(q, CFG.ngram_n, False)
    s = _grams(q, CFG.shingle_size, True)
    ngram = (
        max((len(g & _grams(r, CFG.ngram_n, False)) / len(g) for r in refs), default=0.0)
        if g
        else 0.0
    )
    jac = max(
        (len(s & (t := _grams(r, CFG.shingle_size, True))) / len(s | t) for r in refs),
        default=0.0,
    )
    return ngram, jac


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14)))


def test_scores_equal_brute_force_on_random_questions():
    rng = random.Random(0)
    questions = [_sentence(rng) for _ in range(60)]
    tests = {"a": [_sentence(rng) for _ in range(30)], "b": questions[:5]}
    scores = leakage_scores(questions, tests, CFG)
    assert len(scores) == len(questions)
    for q, row in zip(questions, scores):
        for bench, refs in tests.items():
            ngram, jac = _brute(q, refs)
            assert abs(row[bench]["ngram"] - ngram) < 1e-6, (q, bench)
            assert abs(row[bench]["jaccard"] - jac) < 1e-6, (q, bench)
    # a copy of a test question scores 1 on both measures when it has an n-gram
    assert all(scores[i]["b"]["jaccard"] == 1.0 for i in range(5))


def test_empty_inputs():
    assert max_ngram_overlap([], ["x y z w"], CFG) == []
    assert max_ngram_overlap(["a b c d e"], [], CFG) == [0.0]
    assert leakage_scores(["a b c d e"], {}, CFG) == [{}]


def test_positive_ngram_score_is_what_the_filter_drops():
    test_q = "Ana has 12 apples and buys 5 more apples at the market today."
    cands = [
        "Tom has 3 pears. Ana has 12 apples and buys 5 more, how many?",
        "Tom has 3 pears and 7 boxes of pears each. How many pears in all?",
    ]
    scores = leakage_scores(cands, {"t": [test_q]}, CFG)
    problems = [Problem.create(q, None, origin="similar") for q in cands]
    result = filter_problems(problems, existing=[], test_sets={"t": [test_q]}, cfg=CFG)
    for s, reason in zip(scores, result.reasons):
        assert (s["t"]["ngram"] > 0) == (reason == "contaminated_ngram")
