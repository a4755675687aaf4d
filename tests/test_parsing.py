"""Parsers of model output: programs and problem lists, from clean to hopeless, and a
random-garbage fuzz loop. They must never raise."""

from __future__ import annotations

import random
import string

import pytest

from fdd_core.parsing import (
    ParsedProblems,
    ParsedProgram,
    extract_problems,
    extract_program,
)


def run(program: str) -> object:
    """Execute a parsed program (our own test inputs) and return its `ans`."""
    scope: dict = {}
    exec(compile(program, "<test>", "exec"), scope)
    return scope["ans"]


# ------------------------------------------------------------------------- programs

PROGRAMS_OK = {
    "python fence": ("```python\nx = 5\nans = x + 3\n```", 8),
    "bare fence": ("```\nans = 3 * 4\n```", 12),
    "py tag": ("```py\nans = 7 - 2\n```", 5),
    "chat preamble and trailing prose": (
        "Sure! Here is a Python program that solves the problem:\n\n```python\n"
        "apples = 14\nbought = 9\nans = apples + bought\n```\n\n"
        "This program adds the apples Lena had to the ones she bought, so the answer is 23.",
        23,
    ),
    "unterminated fence": ("```python\ntotal = 12\nans = total / 3\n", 4),
    "closing fence on the code line": ("```python\nans = 2 ** 5```", 32),
    "raw code with prose around": (
        "Here is the code:\nx = 5\ny = 7\nans = x * y\nThe answer is 35.",
        35,
    ),
    "student runs on into the next question": (
        "eggs = 16 - 3 - 4\nans = eggs * 2\nQuestion: A robe takes 2 bolts of blue fiber."
        "\nbolts = 2 + 1\nans = bolts",
        18,
    ),
    "question line inside the fence": (
        "```python\n# hours to minutes\nhours = 3\nans = hours * 60\n\nQuestion: next?\n"
        "ans = 0\n```",
        180,
    ),
    "prose between statements": (
        "x = 5 + 3\nThis is the number of apples in the basket.\nans = x * 2\n",
        16,
    ),
    "whole block indented": ("    x = 5\n    ans = x * 2", 10),
    "first failing fence then a good one": (
        "```python\nans = (3 +\n```\nOops, let me fix that:\n```python\nans = 42\n```",
        42,
    ),
    "last assignment salvaged when nothing stores ans": (
        "```python\na = 3\ntotal = a * 4\n```",
        12,
    ),
    "final expression salvaged": ("```python\na = 3\nb = 4\na + b\n```", 7),
    "a real ans wins over an earlier salvageable block": (
        "```python\nx = 1\n```\n```python\nans = 2\n```",
        2,
    ),
    "several candidates, first with ans wins": (
        "```python\nx = 1\n```\n```python\nans = 2\n```\n```python\nans = 3\n```",
        2,
    ),
    "windows line endings": ("```python\r\na = 6\r\nans = a / 4\r\n```", 1.5),
    "notebook-style trailing ans and answer line": ("Answer\nans = 6\nans\nDone", 6),
    "loops and ifs": (
        "```python\nans = 0\nfor i in range(1, 5):\n    if i % 2 == 0:\n        ans += i\n```",
        6,
    ),
    "math import": ("```python\nimport math\nans = math.floor(7 / 2)\n```", 3),
    "tuple assignment": ("```python\nans, rest = divmod(17, 5)\n```", 3),
    "bytes input": (b"ans = 1 + 1", 2),
    "cut by the token limit after ans": ("x = 5\nans = x * 2\ny = (x +", 10),
    "stray statement after ans": ("ans = 1\nbreak", 1),
}


@pytest.mark.parametrize("name", sorted(PROGRAMS_OK))
def test_extract_program_finds_the_program(name):
    text, expected = PROGRAMS_OK[name]
    parsed = extract_program(text)
    assert isinstance(parsed, ParsedProgram)
    assert parsed.program is not None and parsed.reason is None, parsed
    assert parsed.ok
    assert run(parsed.program) == pytest.approx(expected)
    assert "```" not in parsed.program and "Question:" not in parsed.program


def test_prose_and_fences_never_reach_the_program():
    text = PROGRAMS_OK["chat preamble and trailing prose"][0]
    program = extract_program(text).program
    assert program == "apples = 14\nbought = 9\nans = apples + bought"


FIXES = {
    "print of an expression": ("```python\nprint(3 + 4)\n```", 7, "print_to_ans"),
    "print of an f-string": (
        "apples = 5\nprint(f'The answer is {apples * 2}')",
        10,
        "print_to_ans",
    ),
    "print with a label": ("total = 9\nprint('Answer:', total - 1)", 8, "print_to_ans"),
    "PAL-style solution()": (
        "def solution():\n    a = 5\n    b = 3\n    return a * b\n",
        15,
        "call_solution",
    ),
    "print(solution())": ("def solution():\n    return 7\n\nprint(solution())", 7, "print_to_ans"),
}


@pytest.mark.parametrize("name", sorted(FIXES))
def test_programs_without_ans_are_wrapped_when_unambiguous(name):
    text, expected, fix = FIXES[name]
    parsed = extract_program(text)
    assert parsed.program is not None, parsed
    assert parsed.fixes == (fix,)
    assert run(parsed.program) == pytest.approx(expected)


PROGRAMS_BAD = {
    "prose only": ("The answer is 42.", "no_code"),
    # Seen from the embedded SmolLM2-135M teacher (greedy, 'program' prompt): prose, no code.
    "real 135M reply": ("Ava has 5 pens. She buys 3 pens. She has 5 + 3", "no_code"),
    "empty string": ("", "empty"),
    "whitespace": ("   \n\t ", "empty"),
    "no ans": ("x = 5\nif x:\n    y = 6", "no_ans_assignment"),
    "print of a plain string": ("x = 5\nprint('done')", "no_ans_assignment"),
    "print of ans itself": ("x = 1\nprint(ans)", "no_ans_assignment"),
    "ans inside a function only": (
        "def f():\n    ans = 3\n    return ans\nf(1)",
        "no_ans_assignment",
    ),
    "broken first statement": ("```python\nx = 5 +* 3\nans = x\n```", "syntax_error"),
    "broken ans line": ("x = 5\nans = x +* 2", "syntax_error"),
    "return outside a function": ("return 5", "syntax_error"),
    "unclosed bracket": ("```python\nans = (3 + 4\n```", "syntax_error"),
    "block without a body": ("for i in range(3):\nans = 1", "syntax_error"),
    "broken line before a later ans": ("ans = 5 * 3\nans = ans +* 2", "syntax_error"),
}


@pytest.mark.parametrize("name", sorted(PROGRAMS_BAD))
def test_extract_program_gives_none_and_a_reason(name):
    text, reason = PROGRAMS_BAD[name]
    parsed = extract_program(text)
    assert parsed == ParsedProgram(None, reason), parsed
    assert not parsed.ok


@pytest.mark.parametrize("value", [None, 12, 3.5, ["ans = 1"], {"text": "ans = 1"}, object()])
def test_extract_program_non_text_input(value):
    assert extract_program(value) == ParsedProgram(None, "empty")


def test_broken_ans_line_does_not_leave_a_partial_program():
    # Cutting at the broken line would leave `x = 5`, which is not a program for the answer.
    assert extract_program("x = 5\nans = x +* 2").program is None


def test_small_model_repetition_and_runaway_outputs():
    repeated = "```python\nans = 3 + 4\n```\n" + "Question: What is 3 + 4?\n```python\n" * 50
    assert run(extract_program(repeated).program) == 7
    runaway = "x = 1\n" + "x = x + 1\n" * 5000 + "ans = x"  # cut at MAX_CHARS: no ans left
    parsed = extract_program(runaway)
    assert parsed.program is None and parsed.reason == "no_ans_assignment"
    deep = "ans = " + "(" * 5000 + "1" + ")" * 5000  # the compiler's recursion limit
    assert extract_program(deep).reason == "syntax_error"
    nul = "ans = 1\x00\x00"
    assert run(extract_program(nul).program) == 1


# ------------------------------------------------------------------------- problems

PROBLEM_LISTS = {
    "numbered with preamble": (
        "Here are 3 harder problems:\n\n"
        "1. Tom has 5 apples and buys 3 bags with 4 apples each. How many apples does he have?\n"
        "2. Sara has 12 pens. She gives away a third and buys 7. How many pens does she have?\n"
        "3) A bus carries 40 people. At the first stop 25% get off. How many remain?",
        [
            "Tom has 5 apples and buys 3 bags with 4 apples each. How many apples does he have?",
            "Sara has 12 pens. She gives away a third and buys 7. How many pens does she have?",
            "A bus carries 40 people. At the first stop 25% get off. How many remain?",
        ],
    ),
    "bold labels with answers and solutions": (
        "**Problem 1:** Mia bakes 24 cookies and eats 3. How many are left?\n"
        "**Answer:** 21\n\n"
        "**Problem 2:** Leo earns $8 an hour for 5 hours. How much does he earn?\n"
        "**Solution:** 8*5 = 40",
        [
            "Mia bakes 24 cookies and eats 3. How many are left?",
            "Leo earns $8 an hour for 5 hours. How much does he earn?",
        ],
    ),
    "Question N: with answer lines": (
        "Question 1: A train travels 60 km per hour for 3 hours. How far does it go?\n"
        "Answer: 180 km\n"
        "Question 2: Ann reads 12 pages a day for a week. How many pages does she read?\n"
        "Answer: 84",
        [
            "A train travels 60 km per hour for 3 hours. How far does it go?",
            "Ann reads 12 pages a day for a week. How many pages does she read?",
        ],
    ),
    "bullets": (
        "- Ben has 7 marbles and finds twice as many. How many marbles does he have?\n"
        "* Kim has 30 stickers and gives 12 away. How many are left?",
        [
            "Ben has 7 marbles and finds twice as many. How many marbles does he have?",
            "Kim has 30 stickers and gives 12 away. How many are left?",
        ],
    ),
    "blank-line paragraphs": (
        "Jack has 9 cars. He buys 4 more. How many cars does he have?\n\n"
        "Lily has 15 dolls and gives 6 to her sister.\nHow many dolls does she have left?",
        [
            "Jack has 9 cars. He buys 4 more. How many cars does he have?",
            "Lily has 15 dolls and gives 6 to her sister. How many dolls does she have left?",
        ],
    ),
    "heading per problem": (
        "### Problem 1\nA farmer has 12 cows and buys 8 more. Then he sells half. "
        "How many cows remain?\n\n### Problem 2\nA shop sells 45 shirts on Monday and twice "
        "as many on Tuesday. How many shirts does it sell in total?",
        [
            "A farmer has 12 cows and buys 8 more. Then he sells half. How many cows remain?",
            "A shop sells 45 shirts on Monday and twice as many on Tuesday. How many shirts "
            "does it sell in total?",
        ],
    ),
    "numbered solution steps under a problem": (
        "1. The store had 50 apples. It sold 20% of them and then 5 more. How many are left?\n"
        "   Step 1: 20% of 50 = 10\n   Step 2: 50 - 10 - 5 = 35\n   Answer: 35",
        ["The store had 50 apples. It sold 20% of them and then 5 more. How many are left?"],
    ),
    "quoted items": (
        '1. "Mark buys 3 pizzas for $12 each and a drink for $4. How much does he spend?"\n'
        "2. 'Nina has 100 dollars and spends 35%. How much money is left?'",
        [
            "Mark buys 3 pizzas for $12 each and a drink for $4. How much does he spend?",
            "Nina has 100 dollars and spends 35%. How much money is left?",
        ],
    ),
    "inline numbering on one line": (
        "1. Sam has 4 boxes of 6 eggs. How many eggs? (Answer: 24) 2. Eva has 3 bags of 5 "
        "nuts. How many nuts does she have in all?",
        [
            "Sam has 4 boxes of 6 eggs. How many eggs?",
            "Eva has 3 bags of 5 nuts. How many nuts does she have in all?",
        ],
    ),
    "label without number": (
        "Harder problem: John has 5 apples. He buys 2 bags of 6 apples each and gives 4 away. "
        "How many apples does he have now?",
        [
            "John has 5 apples. He buys 2 bags of 6 apples each and gives 4 away. How many "
            "apples does he have now?"
        ],
    ),
    "answer after the question mark": (
        "1. Zoe has 3 cats and 4 dogs. How many pets does she have? She has 7 pets.\n"
        "2. Find the cost of 6 pens at $2 each.",
        [
            "Zoe has 3 cats and 4 dogs. How many pets does she have?",
            "Find the cost of 6 pens at $2 each.",
        ],
    ),
    "Q-numbered": (
        "Q1: Ivy picks 14 flowers and gives 5 to her mom. How many flowers are left?\n"
        "Q2) Ravi buys 3 books for $7 each. How much does he pay?",
        [
            "Ivy picks 14 flowers and gives 5 to her mom. How many flowers are left?",
            "Ravi buys 3 books for $7 each. How much does he pay?",
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(PROBLEM_LISTS))
def test_extract_problems(name):
    text, expected = PROBLEM_LISTS[name]
    parsed = extract_problems(text)
    assert isinstance(parsed, ParsedProblems)
    assert parsed.problems == expected
    assert parsed.reason is None


def test_extract_problems_drops_fragments_repeats_and_respects_max_n():
    text = (
        "1. Tom has 5 apples. How many apples does he have?\n"
        "2. Too short?\n"
        "3. This sentence asks nothing and states 4 things.\n"
        "4. Then find how many are left over in the end?\n"  # a step: no quantity
        "5. Tom has 5 apples. How many apples does he have?\n"  # a repeat
        "6. Ana has 9 pears and eats 2. How many pears are left?"
    )
    parsed = extract_problems(text)
    assert parsed.problems == [
        "Tom has 5 apples. How many apples does he have?",
        "Ana has 9 pears and eats 2. How many pears are left?",
    ]
    assert parsed.n_dropped == 4
    assert extract_problems(text, max_n=1).problems == parsed.problems[:1]
    assert extract_problems(text, max_n=0).problems == []


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        ("   ", "empty"),
        (None, "empty"),
        (42, "empty"),
        ("Sure! Here you go.", "no_problems"),
        ("1.\n2.\n3.", "no_problems"),
        ("```python\nans = 5\n```", "no_problems"),
    ],
)
def test_extract_problems_nothing_found(text, reason):
    parsed = extract_problems(text)
    assert parsed.problems == [] and parsed.reason == reason


def test_extract_problems_small_model_repetition():
    item = "Tom has 5 apples and buys 2 more. How many apples does he have now?"
    text = "Here are the problems:\n" + "".join(f"{i % 3 + 1}. {item}\n" for i in range(40))
    parsed = extract_problems(text, max_n=3)
    assert parsed.problems == [item]


# ------------------------------------------------------------------------------ fuzz

_FRAGMENTS = [
    "```",
    "```python\n",
    "```py",
    "ans",
    " = ",
    "ans = ",
    "print(",
    ")",
    "(",
    "def solution():",
    "\n    return ",
    "Question:",
    "Problem 1:",
    "1.",
    "2)",
    "- ",
    "* ",
    "**",
    "Answer:",
    "?",
    "\n",
    "\n\n",
    "How many apples",
    " does Tom have",
    "12",
    "3.5",
    "{{n}}",
    "\x00",
    "\r\n",
    "\t",
    "ñ",
    "€",
    "🙂",
    "#",
    "####",
    "\\",
    "'''",
    '"""',
    "lambda",
    "for i in range(3):",
    "import os",
    "return",
    "break",
    "yield",
    "(((((",
    "]]]]",
    ":",
    "=",
    "==",
    "+=",
]


def _garbage(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.4:
        return "".join(rng.choice(_FRAGMENTS) for _ in range(rng.randint(0, 40)))
    if kind < 0.7:
        alphabet = string.printable + "ñ€🙂\x00\u2028"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
    return "".join(
        chr(rng.randint(0, 0x10FFFF)) if rng.random() < 0.5 else rng.choice(_FRAGMENTS)
        for _ in range(rng.randint(0, 60))
    )


def test_fuzz_parsers_never_raise():
    rng = random.Random(1234)
    reasons_p: dict[str | None, int] = {}
    reasons_q: dict[str | None, int] = {}
    for _ in range(400):
        text = _garbage(rng)
        parsed = extract_program(text)
        assert isinstance(parsed, ParsedProgram)
        assert (parsed.program is None) != (parsed.reason is None)
        # The guard for unexpected failures must not be what keeps the parser quiet.
        assert parsed.reason != "parse_failure", repr(text)
        if parsed.program is not None:
            compile(parsed.program, "<fuzz>", "exec")  # what it returns compiles
        reasons_p[parsed.reason] = reasons_p.get(parsed.reason, 0) + 1
        problems = extract_problems(text, max_n=rng.choice([None, 0, 2, 5]))
        assert isinstance(problems, ParsedProblems)
        assert problems.reason != "parse_failure", repr(text)
        assert all(isinstance(p, str) and p for p in problems.problems)
        reasons_q[problems.reason] = reasons_q.get(problems.reason, 0) + 1
    # The loop exercised more than one path.
    assert len(reasons_p) >= 3, reasons_p
    assert len(reasons_q) >= 2, reasons_q
