"""Smoke test of bench/bench_rehearsal.py and its SCRIPTED teacher (bench/scripted_teacher.py).

The unit tests run in a moment; the end-to-end one runs the whole flow twice (a fresh run
and a re-run) on 20 GSM8K problems with one feedback round: slow, and it needs ../shared.
"""

from __future__ import annotations

import json

import pytest

from bench.scripted_teacher import ScriptedTeacher, gsm8k_program, variant
from fdd_core.parsing import extract_problems, extract_program
from fdd_core.prompts import load_template
from tests.conftest import shared_file

ROWS = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half "
        "as many clips in May. How many clips did Natalia sell altogether in April and May?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = "
        "<<48+24=72>>72 clips altogether in April and May.\n#### 72",
    },
    {
        "question": "A shop sells 1,200 pens a day. How many pens does it sell in 3 days?",
        "answer": "It sells 1200*3 = <<1200*3=3600>>3,600 pens.\n#### 3,600",
    },
]


def _run(source: str) -> float:
    scope: dict = {}
    exec(source, scope)  # noqa: S102 - the teacher's own scripted programs, in a test
    return float(scope["ans"])


def test_gsm8k_program_follows_the_annotations_and_gives_the_answer():
    program, value = gsm8k_program(ROWS[0]["answer"])
    assert program.splitlines() == ["step_1 = 48/2", "step_2 = 48+24", "ans = 72"]
    assert value == 72 and _run(program) == 72
    program, value = gsm8k_program(ROWS[1]["answer"])
    assert value == 3600 and _run(program) == 3600
    with pytest.raises(ValueError, match="####"):
        gsm8k_program("no final answer line")


def test_variants_are_deterministic_distinct_and_correct():
    a = variant("parent", 3, "similar", 7, 0, 0)
    assert a == variant("parent", 3, "similar", 7, 0, 0)
    texts = {variant("parent", 3, "similar", seed, 0, i)[0] for seed in range(20) for i in range(3)}
    assert len(texts) == 60
    for seed in range(20):
        text, program, value = variant("parent", 4, "complex", seed, 0, 0)
        assert _run(program) == value and text.endswith("?")


def test_scripted_teacher_answers_programs_and_registers_new_problems():
    teacher = ScriptedTeacher(ROWS)
    prompt = load_template("program").render(question=ROWS[0]["question"])
    outs = teacher.complete(prompt, n=4, seed=1)
    assert len(outs) == 4
    parsed = extract_program(outs[0])
    assert parsed.program is not None and _run(parsed.program) == 72
    similar = load_template("similar").render(question=ROWS[0]["question"], n=2)
    problems = extract_problems(teacher.complete(similar, n=1, seed=3)[0]).problems
    assert len(problems) == 2
    # A problem it wrote is known afterwards: labelling prompts for it are answered.
    out = teacher.complete(load_template("program").render(question=problems[0]), n=1)[0]
    assert extract_program(out).program is not None
    unknown = teacher.complete(load_template("program").render(question="What is 2+2?"))[0]
    assert extract_program(unknown).program is None
    assert teacher.stats["unknown_question"] == 1
    assert teacher.stats["requests_program"] == 3 and teacher.stats["problems_written"] == 2
    assert teacher.stats["prompt_chars_program"] > 0


def test_doubled_problems_are_distinct(tmp_path):
    from bench.bench_rehearsal import write_problems

    src = tmp_path / "src.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    write_problems(src, 5, tmp_path / "out.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and len({r["question"] for r in rows}) == 5
    assert rows[2]["question"].startswith("In town 2, natalia sold")
    assert rows[2]["answer"] == ROWS[0]["answer"]


def test_read_problems_reads_only_a_shards_slice(tmp_path):
    """What the rehearsal found: each shard decoded the whole problem file (shards x rows)."""
    from fdd_core.schemas import Problem
    from fdd_core.shards import read_problems, shard_bounds, write_problems

    problems = [Problem.create(f"What is {i} plus {i}?", 2 * i) for i in range(50)]
    ref = write_problems(tmp_path, "p", problems)
    for bounds in shard_bounds(50, 16) + [(0, 0), (49, 50), (40, 80), (60, 70)]:
        assert read_problems(ref, bounds) == problems[bounds[0] : bounds[1]]
    with pytest.raises(ValueError, match="bad bounds"):
        read_problems(ref, (5, 2))
    # Rows past the slice are never decoded: a damaged tail does not fail an earlier shard.
    with open(ref.path, "a") as fh:
        fh.write("{not json\n")
    assert read_problems(ref, (0, 16)) == problems[:16]
    with pytest.raises(ValueError, match=r":51: not valid JSON"):
        read_problems(ref, (48, 60))


@pytest.mark.slow
def test_rehearsal_end_to_end_tiny(tmp_path):
    train = shared_file("gsm8k", "train.jsonl")  # skips, saying why, without ../shared
    test = shared_file("gsm8k", "test.jsonl")
    from bench.bench_rehearsal import BASE_N, main

    out = tmp_path / "out"
    rc = main(
        [
            "--scales",
            str(20 / BASE_N),
            "--rounds",
            "1",
            "--eval-limit",
            "4",
            "--train-steps",
            "1",
            "--data",
            str(train),
            "--test-data",
            str(test),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    (res,) = json.loads((out / "rehearsal.json").read_text())
    assert res["n_problems"] == 20
    r0, r1 = res["rounds"]
    # The scripted teacher's programs reproduce every reference answer.
    assert r0["stats"]["rationales"]["problems_with_rationale"] == 20
    assert r1["stats"]["filter"]["candidates"] == res["synthesis_budget"] > 0
    assert r1["added"] > 0
    fresh, rerun = res["fresh"], res["rerun"]
    for stage in ("rationales", "grade", "synthesize", "filter", "label", "grow", "train"):
        assert fresh["stages"][stage]["wall_s"] > 0, stage
    assert fresh["task_runs_total"] == rerun["task_runs_total"] >= 12
    # The re-run computes nothing again: every task run is a cache hit.
    assert set().union(*(v.keys() for v in rerun["task_runs"].values())) == {"Cached"}
    assert res["teacher"]["completion_tokens"] > 0 and res["teacher"]["unknown_question"] == 0
    assert fresh["folders"]["run_folder"]["files"] > 0
