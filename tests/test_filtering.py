"""Tests of fdd_core.filtering: sanity checks, exact/near dedup, decontamination, leakage."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash

from fdd_core.config import FilteringConfig
from fdd_core.filtering import (
    DROP_REASONS,
    Decontaminator,
    Deduplicator,
    MinHasher,
    basic_check,
    filter_problems,
    filter_stream,
    lsh_bands,
    max_similarity_to,
    tokenize,
)
from fdd_core.schemas import Problem
from tests.conftest import shared_file

REPO = Path(__file__).resolve().parents[1]
CFG = FilteringConfig()

BAKERY = (
    "Maria runs a small bakery that opens at 7 in the morning. On Monday she baked 48 loaves "
    "of bread and 36 muffins. She sold 29 loaves before noon and 12 more in the afternoon, and "
    "she gave 5 muffins to her neighbors. Each loaf sells for $3 and each muffin for $2. How "
    "much money did she make from the loaves she sold on Monday?"
)
BAKERY_ONE_WORD = BAKERY.replace("her neighbors", "her cousins")
TRAIN = (
    "A train leaves the station at 9 am traveling 60 miles per hour. A second train leaves the "
    "same station two hours later at 80 miles per hour. How long until the second train catches "
    "up with the first one?"
)
GARDEN = (
    "Leo plants 4 rows of tulips with 15 tulips in each row. Rabbits eat 9 of the tulips. "
    "How many tulips are left in the garden?"
)
# A benchmark-style test question (invented here, so the test does not depend on ../shared).
TEST_Q = (
    "Ahmed has 3 boxes of crayons with 24 crayons in each box. He gives 17 crayons to his "
    "sister and loses 6 on the bus. How many crayons does Ahmed have left?"
)


def _p(question: str, i: int) -> Problem:
    return Problem(id=f"c{i}", question=question, origin="similar", round=1)


def _filter(questions, existing=(), test_sets=None, cfg=CFG):
    return filter_problems(
        [_p(q, i) for i, q in enumerate(questions)],
        existing=list(existing),
        test_sets=test_sets or {},
        cfg=cfg,
    )


def _jaccard(a: str, b: str, k: int = 3) -> float:
    ta, tb = tokenize(a), tokenize(b)
    sa = {tuple(ta[i : i + k]) for i in range(max(len(ta) - k + 1, 1))}
    sb = {tuple(tb[i : i + k]) for i in range(max(len(tb) - k + 1, 1))}
    return len(sa & sb) / len(sa | sb)


# ----------------------------------------------------------------------------- sanity checks


@pytest.mark.parametrize(
    "text",
    [
        "",
        "    \n ",
        "12 + 5 = 17 ?",  # no letter
        "How many apples are left after the party is over?",  # no digit
        "```python\nans = 12 * 4\n```",
        "Answer: 48 apples in total for the whole class",
        "def solution():\n    return 5 + 7 apples",
        "Tom has 5 apples and 3 pears.<|im_end|> How many fruits?",
        "{question} Tom has 5 apples. How many does he have?",
        "\x00\x01\x02\x03\x04 Tom has 5 apples \x05\x06\x07\x08\x0b",
        "Tom has 5 apples \ufffd\ufffd\ufffd\ufffd\ufffd\ufffd\ufffd\ufffd",
    ],
)
def test_malformed_texts_are_dropped_as_malformed(text):
    assert basic_check(text, CFG) == "malformed"
    res = _filter([text])
    assert res.kept == [] and res.dropped["malformed"] == 1


def test_well_formed_questions_pass_the_sanity_checks():
    for q in (
        BAKERY,
        TRAIN,
        GARDEN,
        "Ana has 3 cats; each eats 2 cans a day. Cans eaten in 4 days?",
    ):
        assert basic_check(q, CFG) is None, q


def test_length_bounds_give_too_short_and_too_long():
    cfg = FilteringConfig(min_chars=20, max_chars=300)
    assert basic_check("Tom has 5 apples.", cfg) == "too_short"  # 17 characters
    assert basic_check("Tom has 5 apples today.", cfg) is None  # 23
    assert basic_check(BAKERY, cfg) == "too_long"  # 344 characters
    res = _filter(["Tom has 5.", BAKERY, GARDEN], cfg=cfg)
    assert (res.dropped["too_short"], res.dropped["too_long"]) == (1, 1)
    assert [p.question for p in res.kept] == [GARDEN]


# ----------------------------------------------------------------------------- duplicates


def test_exact_duplicate_after_case_and_whitespace_normalisation():
    variant = "  " + BAKERY.upper().replace(" ", "   ", 5).replace(". ", ".\n\t", 2) + "\n"
    res = _filter([BAKERY, variant, GARDEN])
    assert [p.question for p in res.kept] == [BAKERY, GARDEN]
    assert res.dropped["duplicate_exact"] == 1
    assert res.examples["duplicate_exact"] == [variant[:300]]


def test_near_duplicate_with_one_word_changed_is_caught_and_different_question_kept():
    assert 0.85 <= _jaccard(BAKERY, BAKERY_ONE_WORD) < 1.0  # a realistic one-word edit
    assert CFG.near_dup_threshold == 0.8
    res = _filter([BAKERY, BAKERY_ONE_WORD, TRAIN])
    assert [p.question for p in res.kept] == [BAKERY, TRAIN]
    assert res.dropped["duplicate_near"] == 1 and res.dropped["duplicate_exact"] == 0


def test_near_duplicate_threshold_is_respected():
    # The same edit is not a near duplicate once the threshold is above its similarity.
    res = _filter([BAKERY, BAKERY_ONE_WORD], cfg=FilteringConfig(near_dup_threshold=0.99))
    assert len(res.kept) == 2


def test_dedup_against_questions_already_in_the_dataset():
    existing = [BAKERY, TRAIN]
    res = _filter([BAKERY.lower(), BAKERY_ONE_WORD, GARDEN], existing=existing)
    assert [p.question for p in res.kept] == [GARDEN]
    assert (res.dropped["duplicate_exact"], res.dropped["duplicate_near"]) == (1, 1)


def test_existing_questions_are_not_deduplicated_among_themselves():
    dedup = Deduplicator([BAKERY, BAKERY, BAKERY_ONE_WORD], CFG)
    assert dedup.size == 3
    assert dedup.check_and_add(GARDEN) is None
    assert dedup.check_and_add(GARDEN) == "duplicate_exact"


def test_check_and_add_one_at_a_time_matches_the_batch():
    gen = random.Random(3)
    qs = [_variant(gen, BAKERY) for _ in range(40)] + [_variant(gen, TRAIN) for _ in range(40)]
    gen.shuffle(qs)
    one = Deduplicator([GARDEN], CFG)
    batch = Deduplicator([GARDEN], CFG)
    assert [one.check_and_add(q) for q in qs] == batch.check_and_add_many(qs)


def _variant(gen: random.Random, q: str) -> str:
    words = q.split()
    for _ in range(gen.randint(0, 6)):
        words[gen.randrange(len(words))] = gen.choice(["red", "7", "blue", "13", "many"])
    return " ".join(words)


def test_lsh_decisions_equal_brute_force_over_signatures():
    """The band layout guarantees no LSH miss: every near-duplicate decision equals a full
    comparison of the signature with every earlier kept question (and existing question)."""
    gen = random.Random(0)
    base = [BAKERY, TRAIN, GARDEN, TEST_Q]
    qs = [_variant(gen, gen.choice(base)) for _ in range(300)]
    existing = [_variant(gen, BAKERY) for _ in range(5)]
    got = Deduplicator(existing, CFG).check_and_add_many(qs)

    expected = _brute_force(existing, qs)
    assert got == expected
    assert expected.count("duplicate_near") > 20 and expected.count(None) > 20  # both occur


def _brute_force(existing: list[str], qs: list[str]) -> list[str | None]:
    """Each question in turn against every existing and earlier kept one, in full."""
    from fdd_core.schemas import normalize_text

    hasher = MinHasher(CFG.num_perm, CFG.shingle_size)
    sigs = hasher.signatures(hasher.tokens(existing + qs))
    need = np.ceil(CFG.near_dup_threshold * CFG.num_perm - 1e-9)
    kept_rows = list(range(len(existing)))
    seen = {normalize_text(q) for q in existing}
    expected: list[str | None] = []
    for j, q in enumerate(qs):
        row = len(existing) + j
        if normalize_text(q) in seen:
            expected.append("duplicate_exact")
        elif (np.count_nonzero(sigs[kept_rows] == sigs[row], axis=1) >= need).any():
            expected.append("duplicate_near")
        else:
            expected.append(None)
            kept_rows.append(row)
            seen.add(normalize_text(q))
    return expected


def test_batches_of_any_size_give_the_brute_force_decisions():
    """Copies inside a batch and across batches, exact and near, in every mix."""
    gen = random.Random(5)
    base = [BAKERY, TRAIN, GARDEN, TEST_Q]
    pool = [_variant(gen, gen.choice(base)) for _ in range(120)]
    qs = [
        gen.choice(pool) if gen.random() < 0.4 else _variant(gen, gen.choice(pool))
        for _ in range(600)
    ]
    qs += [q.upper() for q in qs[:50]]  # exact after normalisation
    existing = [_variant(gen, BAKERY) for _ in range(5)] + [pool[0]]
    expected = _brute_force(existing, qs)
    assert min(expected.count(r) for r in (None, "duplicate_exact", "duplicate_near")) > 30
    for sizes in ([len(qs)], [1] * 40 + [len(qs)], [7] * 200, [3, 250, 1, 90, 500]):
        dedup, got, lo = Deduplicator(existing, CFG), [], 0
        for size in sizes:
            got += dedup.check_and_add_many(qs[lo : lo + size])
            lo += size
        assert got == expected, sizes
        assert dedup.size == len(existing) + expected.count(None)


def test_filter_stream_in_small_chunks_equals_filter_problems():
    gen = random.Random(8)
    base = [BAKERY, TRAIN, GARDEN, TEST_Q]
    qs = [_variant(gen, gen.choice(base)) for _ in range(400)] + ["no digits here at all", ""]
    gen.shuffle(qs)
    tests = {"t": [TEST_Q], "u": [_variant(gen, TRAIN)]}
    whole = _filter(qs, existing=[GARDEN], test_sets=tests)
    problems = [_p(q, i) for i, q in enumerate(qs)]
    streamed = list(
        filter_stream(iter(problems), existing=[GARDEN], test_sets=tests, cfg=CFG, chunk=9)
    )
    assert [p.id for p, _, _ in streamed] == [p.id for p in problems]
    assert [r for _, r, _ in streamed] == whole.reasons
    assert [b for _, _, b in streamed] == whole.benchmarks
    assert len(set(whole.reasons)) >= 5  # kept, malformed, contaminated, exact, near all occur
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        next(filter_stream([], existing=[], test_sets={}, cfg=CFG, chunk=0))


def test_lsh_band_layout_covers_the_threshold():
    for t, n in [(0.8, 64), (0.7, 64), (0.9, 128), (0.5, 16), (1.0, 64)]:
        bands, rows = lsh_bands(t, n)
        assert bands * rows <= n and rows >= 1
        assert bands > int((1 - t) * n + 1e-9)  # more bands than allowed mismatches


# ----------------------------------------------------------------------------- decontamination


def test_test_question_embedded_in_a_longer_question_is_contaminated():
    sets = {"gsm8k": [TRAIN], "svamp": [TEST_Q, GARDEN]}
    embedded = "Here is a new one for the class. " + TEST_Q + " Also, how many boxes are empty?"
    res = _filter([embedded, BAKERY], test_sets=sets)
    assert [p.question for p in res.kept] == [BAKERY]
    assert res.dropped["contaminated_ngram"] == 1
    assert res.by_benchmark == {"svamp": 1}
    assert Decontaminator(sets, CFG).check(embedded) == ("contaminated_ngram", "svamp")


def test_one_shared_13_gram_is_enough_and_12_words_are_not():
    words = tokenize(TEST_Q)
    thirteen = " ".join(words[5:18])
    twelve = " ".join(words[5:17])
    frame = "On a sunny day 4 friends met. {} Then they all walked 3 miles to the lake."
    decon = Decontaminator({"svamp": [TEST_Q]}, CFG)
    assert decon.check(frame.format(thirteen)) == ("contaminated_ngram", "svamp")
    assert decon.check(frame.format(twelve)) is None
    assert Decontaminator({"svamp": [TEST_Q]}, FilteringConfig(ngram_n=12)).check(
        frame.format(twelve)
    ) == ("contaminated_ngram", "svamp")


def test_short_test_question_counts_as_one_gram_of_its_own_length():
    short_test = "Sam has 12 pens and buys 3 more pens. How many pens?"  # 11 words < 13
    decon = Decontaminator({"multiarith": [short_test]}, CFG)
    assert decon.check("Today at school: " + short_test + " Explain your answer with 2 steps.") == (
        "contaminated_ngram",
        "multiarith",
    )
    assert decon.check(short_test) == ("contaminated_ngram", "multiarith")
    # Part of it is not enough.
    assert decon.check("Sam has 12 pens and buys 3 more notebooks for his 4 friends.") is None


def test_near_copy_of_a_test_question_is_contaminated_near():
    cfg = FilteringConfig(ngram_n=50)  # n-grams longer than the question: only MinHash applies
    decon = Decontaminator({"gsm8k": [TRAIN], "asdiv": [BAKERY]}, cfg)
    assert decon.check(BAKERY_ONE_WORD) == ("contaminated_near", "asdiv")
    assert decon.check(GARDEN) is None


def test_contamination_is_checked_before_duplicates_and_can_be_turned_off():
    sets = {"gsm8k": [BAKERY]}
    res = _filter([BAKERY], existing=[BAKERY], test_sets=sets)
    assert res.dropped["contaminated_ngram"] == 1 and res.dropped["duplicate_exact"] == 0
    res = _filter(
        [BAKERY], existing=[BAKERY], test_sets=sets, cfg=FilteringConfig(decontaminate=False)
    )
    assert res.dropped["contaminated_ngram"] == 0 and res.dropped["duplicate_exact"] == 1


def test_real_gsm8k_test_questions_are_caught_when_copied():
    path = shared_file("gsm8k", "test.jsonl")
    test_qs = [json.loads(line)["question"] for line in path.open() if line.strip()]
    decon = Decontaminator({"gsm8k": test_qs}, CFG)
    copies = [f"Solve this carefully. {q}" for q in test_qs[:50]]
    assert all(decon.check(q) == ("contaminated_ngram", "gsm8k") for q in copies)
    assert decon.check(BAKERY) is None and decon.check(TRAIN) is None


# ----------------------------------------------------------------------------- the whole filter


def _mixed_batch() -> list[str]:
    return [
        BAKERY,
        "",
        "Tom has 5.",
        BAKERY.upper(),
        BAKERY_ONE_WORD,
        TRAIN,
        "No numbers at all in this question, right?",
        GARDEN,
        TEST_Q + " Why?",
        "x" * 2000 + " 5",
    ]


def test_counts_per_reason_add_up_and_every_reason_is_reported():
    qs = _mixed_batch()
    res = _filter(qs, test_sets={"svamp": [TEST_Q]})
    assert set(res.dropped) == set(DROP_REASONS)
    assert res.n_dropped == sum(res.dropped.values()) == len(qs) - len(res.kept)
    assert res.dropped == {
        "malformed": 2,
        "too_short": 1,
        "too_long": 1,
        "duplicate_exact": 1,
        "duplicate_near": 1,
        "contaminated_ngram": 1,
        "contaminated_near": 0,
    }
    assert [p.question for p in res.kept] == [BAKERY, TRAIN, GARDEN]
    for reason, examples in res.examples.items():
        assert 0 < len(examples) <= min(3, res.dropped[reason])


def test_filter_is_deterministic_within_a_process():
    gen = random.Random(4)
    qs = _mixed_batch() + [_variant(gen, gen.choice([BAKERY, TRAIN])) for _ in range(60)]
    runs = [_filter(qs, existing=[TRAIN], test_sets={"svamp": [TEST_Q]}) for _ in range(2)]
    assert [p.id for p in runs[0].kept] == [p.id for p in runs[1].kept]
    assert (runs[0].dropped, runs[0].examples) == (runs[1].dropped, runs[1].examples)


@pytest.mark.slow  # two fresh interpreters
def test_filter_is_deterministic_across_processes():
    """Same input, same output, even with a different Python string-hash seed."""
    script = (
        "import json, sys\n"
        "from tests.test_filtering import _filter, _mixed_batch, TEST_Q\n"
        "import random\n"
        "from tests.test_filtering import _variant, BAKERY, TRAIN\n"
        "g = random.Random(1)\n"
        "pick = random.Random(2)\n"
        "qs = _mixed_batch() + [_variant(g, pick.choice([BAKERY, TRAIN])) for _ in range(60)]\n"
        "r = _filter(qs, existing=[TRAIN], test_sets={'svamp': [TEST_Q]})\n"
        "print(json.dumps([[p.id for p in r.kept], r.dropped, r.examples]))\n"
    )
    outs = []
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", script],
            check=False,
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs.append(proc.stdout)
    assert outs[0] == outs[1]
    kept_ids, dropped, _ = json.loads(outs[0])
    assert 0 < len(kept_ids) < 70 and sum(dropped.values()) == 70 - len(kept_ids)


# ----------------------------------------------------------------------------- MinHash & leakage


def test_vectorised_signatures_equal_datasketch_minhash():
    hasher = MinHasher(CFG.num_perm, CFG.shingle_size)
    texts = [BAKERY, TRAIN, "short 5", "", TEST_Q]
    toks = hasher.tokens(texts)
    sigs = hasher.signatures(toks)
    values, owners = hasher.shingle_hashes(toks)
    for i in range(len(texts)):
        m = MinHash(num_perm=CFG.num_perm, seed=1, scheme="affine32", hashfunc=lambda x: x)
        m.update_batch(values[owners == i].tolist())
        assert np.array_equal(m.hashvalues, sigs[i]), texts[i]


def test_estimated_jaccard_tracks_exact_jaccard():
    hasher = MinHasher(256, 3)
    gen = random.Random(5)
    pairs = [(BAKERY, _variant(gen, BAKERY)) for _ in range(20)]
    sigs = hasher.signatures(hasher.tokens([x for pair in pairs for x in pair]))
    est = (sigs[0::2] == sigs[1::2]).mean(axis=1)
    exact = np.array([_jaccard(a, b) for a, b in pairs])
    assert np.abs(est - exact).mean() < 0.05  # standard error ~0.03 at 256 permutations


def test_max_similarity_to_identical_unrelated_and_exact_values():
    refs = [BAKERY, TRAIN]
    sims = max_similarity_to([BAKERY, GARDEN, BAKERY_ONE_WORD, TEST_Q], refs, CFG)
    assert sims[0] == 1.0
    assert sims[1] < 0.1 and sims[3] < 0.1
    assert sims[2] == pytest.approx(_jaccard(BAKERY_ONE_WORD, BAKERY))
    assert max_similarity_to([GARDEN], [], CFG) == [0.0]
    assert max_similarity_to([], refs, CFG) == []


def test_max_similarity_to_equals_brute_force_on_random_variants():
    gen = random.Random(7)
    qs = [_variant(gen, gen.choice([BAKERY, TRAIN, GARDEN])) for _ in range(40)]
    refs = [_variant(gen, gen.choice([BAKERY, TEST_Q])) for _ in range(25)]
    got = max_similarity_to(qs, refs, CFG)
    want = [max(_jaccard(q, r) for r in refs) for q in qs]
    assert got == pytest.approx(want)


def test_filter_speed_on_5000_questions():
    """A smoke check of the vectorised path (the real measurement is bench/bench_filter.py)."""
    gen = random.Random(11)
    base = [BAKERY, TRAIN, GARDEN, TEST_Q]
    qs = [f"{_variant(gen, gen.choice(base))} Case {i}." for i in range(5000)]
    tests = {"t": [_variant(gen, TEST_Q) + f" Version {i}." for i in range(1000)]}
    t0 = time.process_time()
    res = _filter(qs, existing=qs[:500], test_sets=tests)
    assert time.process_time() - t0 < 15.0
    assert res.n_dropped + len(res.kept) == 5000
