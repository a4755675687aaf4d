"""fdd_core.grading: number parsing, tolerant comparison, majority vote, GSM8K references.

Unit cases first, then the real GSM8K and SVAMP files from ../shared (skipped when absent),
including their reference computations run as programs through the real sandbox.
"""

from __future__ import annotations

import json
import math
import random
import re

import pytest

from fdd_core.config import SandboxConfig
from fdd_core.grading import Vote, answers_match, gsm8k_answer, majority_vote, parse_number
from fdd_core.sandbox import Sandbox
from tests.conftest import shared_file


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxConfig(timeout_s=5.0)) as sb:
        yield sb


# --------------------------------------------------------------------------- parse_number


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1,234", 1234.0),
        ("$1,234.50", 1234.5),
        ("50%", 50.0),  # documented choice: the number as written
        ("3/4", 0.75),
        ("-2", -2.0),
        ("\u22123", -3.0),  # unicode minus
        ("9 (apples)", 9.0),
        ("#### 72", 72.0),
        ("#### 1,000", 1000.0),
        ("#### -3", -3.0),
        ("The answer is 18 eggs.", 18.0),
        ("The answer is: $18.00.", 18.0),
        ("so the answer is 12, not 15", 12.0),
        ("I had 3 apples, ate 1, so 2 remain", 2.0),
        ("x = 8 - 3", 3.0),
        ("It weighs 5kg", 5.0),
        ("-$5", -5.0),
        (".5", 0.5),
        ("1.5e3", 1500.0),
        ("12.5.", 12.5),
        ("\\boxed{\\frac{1}{2}}", 0.5),
        ("Total: \\boxed{1{,}000}", 1000.0),
        ("1,000,000.25", 1000000.25),
        ("18", 18.0),
        (18, 18.0),
        (2.5, 2.5),
    ],
)
def test_parse_number_reads_common_forms(text, expected):
    assert parse_number(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "no digits here",
        "eighteen",
        "1/0",
        "1e999",
        True,
        False,
        float("nan"),
        float("inf"),
        10**400,
        "x2",
        [1],
        {"a": 1},
        b"12",
        "####",
        "#### none",
    ],
)
def test_parse_number_gives_none_for_what_it_cannot_read(text):
    assert parse_number(text) is None


def test_parse_number_prefers_the_marked_answer():
    assert parse_number("3 + 4 = 7\n#### 7") == 7.0
    assert parse_number("We get 5 then 6.\n#### 11 (eleven)") == 11.0
    assert parse_number("first 2 then \\boxed{9} and 4") == 9.0
    assert parse_number("the answer is 5. Check: 5 * 2 = 10") == 5.0


def test_parse_number_never_raises_on_garbage():
    rng = random.Random(0)
    alphabet = "0123456789.,-+/$%#eE \\{}()abc\u2212\u00a0\n"
    alphabet += "".join(map(chr, range(0x370, 0x380)))
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        value = parse_number(text)
        assert value is None or (isinstance(value, float) and math.isfinite(value)), text


# --------------------------------------------------------------------------- answers_match


def test_answers_match_with_tolerance():
    assert answers_match(18.0, 18)
    assert answers_match(0.1 + 0.2, 0.3)
    assert answers_match(1000.0, 1000.05)  # within rel_tol 1e-4
    assert not answers_match(1000.0, 1001.0)
    assert answers_match(0.0, 5e-7)  # near zero, abs_tol decides
    assert not answers_match(0.0, 1e-3)
    assert answers_match(100.0, 101.0, rel_tol=0.02)
    assert not answers_match(1.0, 1.0 + 1e-5, rel_tol=0.0, abs_tol=0.0)


def test_answers_match_refuses_missing_and_non_finite():
    for a, b in [
        (None, 1.0),
        (1.0, None),
        (None, None),
        (math.nan, math.nan),
        (math.inf, math.inf),
        (True, 1.0),
        ("18", 18.0),
        (10**400, 1.0),
    ]:
        assert not answers_match(a, b), (a, b)
    from decimal import Decimal
    from fractions import Fraction

    import numpy as np

    assert answers_match(Fraction(1, 4), Decimal("0.25"))
    assert answers_match(np.float32(0.5), 0.5)


# --------------------------------------------------------------------------- majority_vote


def test_majority_vote_counts_failed_programs_in_the_total():
    vote = majority_vote([18.0, None, 18.0, 7.0, None])
    assert vote == Vote(answer=18.0, count=2, total=5, agreement=0.4)


def test_majority_vote_buckets_answers_within_tolerance():
    vote = majority_vote([2.0, 0.30000000000000004, 0.3, 0.3 + 1e-9, 2.0])
    assert vote.answer == pytest.approx(0.3) and vote.count == 3 and vote.total == 5


def test_majority_vote_breaks_ties_by_first_seen():
    assert majority_vote([5.0, 7.0, 7.0, 5.0]).answer == 5.0
    assert majority_vote([7.0, 5.0, 5.0, 7.0]).answer == 7.0
    assert majority_vote([3.0, 4.0]).agreement == 0.5


def test_majority_vote_with_no_usable_answer():
    assert majority_vote([]) == Vote(answer=None, count=0, total=0, agreement=0.0)
    assert majority_vote([None, math.nan, math.inf]) == Vote(None, 0, 3, 0.0)


def test_majority_vote_respects_rel_tol():
    assert majority_vote([100.0, 101.0, 102.0], rel_tol=0.05).count == 3
    assert majority_vote([100.0, 101.0, 102.0], rel_tol=1e-4).count == 1


# --------------------------------------------------------------------------- gsm8k_answer


def test_gsm8k_answer_reads_after_the_marker():
    assert gsm8k_answer("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18") == 18.0
    assert gsm8k_answer("#### 1,200") == 1200.0
    assert gsm8k_answer("no marker, 18") is None
    assert gsm8k_answer(None) is None  # type: ignore[arg-type]


# --------------------------------------------------------------------------- real data


def _jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize("split", ["test", "train"])
def test_every_gsm8k_answer_parses(split):
    rows = _jsonl(shared_file("gsm8k", f"{split}.jsonl"))
    assert len(rows) > 1000
    for i, row in enumerate(rows):
        value = gsm8k_answer(row["answer"])
        assert value is not None and math.isfinite(value), (split, i, row["answer"][-40:])
        # An independent reading of the same field: digits after '####', commas dropped.
        plain = row["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        assert value == float(plain), (split, i, plain)


def test_gsm8k_final_calculator_annotation_agrees_with_the_answer():
    rows = _jsonl(shared_file("gsm8k", "test.jsonl"))
    checked = agree = 0
    for row in rows:
        body, _, _ = row["answer"].rpartition("####")
        results = re.findall(r"<<[^=<>]*=([^<>]*)>>", body)
        if not results:
            continue
        checked += 1
        agree += answers_match(parse_number(results[-1]), gsm8k_answer(row["answer"]))
    assert checked > 1000
    assert agree / checked > 0.9  # the last calculation is usually the answer


def test_every_svamp_answer_parses():
    rows = json.loads(shared_file("svamp", "SVAMP.json").read_text(encoding="utf-8"))
    assert len(rows) == 1000
    for row in rows:
        value = parse_number(row["Answer"])
        assert value is not None and value == float(row["Answer"]), row["ID"]
        assert parse_number(str(row["Answer"])) == pytest.approx(value), row["ID"]


def test_svamp_equations_run_as_programs_match_their_answers(sandbox):
    rows = json.loads(shared_file("svamp", "SVAMP.json").read_text(encoding="utf-8"))
    results = sandbox.run_many([f"ans = {row['Equation']}" for row in rows])
    for row, res in zip(rows, results, strict=True):
        # The sandbox computes exactly what Python does with this (trusted) arithmetic.
        assert res.ok and res.answer == pytest.approx(eval(row["Equation"])), (row["ID"], res)
    labelled = [
        answers_match(res.answer, parse_number(row["Answer"]))
        for row, res in zip(rows, results, strict=True)
    ]
    # SVAMP has a few mislabelled rows (chal-680: Answer 1.0, Equation gives 5.0).
    assert sum(labelled) >= 0.99 * len(rows)


def test_a_program_for_a_known_gsm8k_problem_matches_and_votes(sandbox):
    rows = _jsonl(shared_file("gsm8k", "test.jsonl"))
    row = rows[0]
    assert row["question"].startswith("Janet")
    reference = gsm8k_answer(row["answer"])
    right = (
        "eggs_per_day = 16\neaten = 3\nbaked = 4\nprice = 2\n"
        "ans = (eggs_per_day - eaten - baked) * price"
    )
    wrong = "eggs_per_day = 16\nans = eggs_per_day * 2"
    broken = "ans = eggs_per_day"
    results = sandbox.run_many([right, wrong, right, broken])
    assert answers_match(results[0].answer, reference)
    assert not answers_match(results[1].answer, reference)
    assert results[3].status == "error"
    vote = majority_vote([r.answer if r.ok else None for r in results])
    assert vote.answer == reference and vote.count == 2 and vote.agreement == 0.5
