"""Unit tests of the FDD stage functions with a scripted backend double (no model, no HTTP).

The double answers like tests/servers/scripted_teacher.py: every question's answer is the
sum of its numbers, and with a seed one sample in four is off by one.
"""

from __future__ import annotations

import pytest

from fdd_core.backends.base import Completion, SamplingParams
from fdd_core.config import (
    LabelingConfig,
    RoundsConfig,
    SandboxConfig,
    SynthesisConfig,
    TeacherConfig,
)
from fdd_core.sandbox import Sandbox
from fdd_core.schemas import Example, Problem, Rationale
from fdd_core.stages import (
    GradeRow,
    grade_problems,
    grading_pool,
    label_problems,
    merge_examples,
    read_problems,
    save_shard,
    shard_bounds,
    split_by_grade,
    synthesize_problems,
    write_problems,
    write_rationales,
)
from tests.servers.scripted_teacher import answer, numbers_in, world_question


class ScriptedBackend:
    name = "scripted"
    model_id = "scripted-teacher"

    def __init__(self, garbage_every: int = 0):
        self.calls: list[tuple[int, SamplingParams]] = []
        self.garbage_every = garbage_every

    def _text(self, prompt) -> str:
        return prompt if isinstance(prompt, str) else prompt[-1]["content"]

    def generate(self, prompts, params):
        self.calls.append((len(prompts), params))
        out = []
        for i, p in enumerate(prompts):
            if self.garbage_every and i % self.garbage_every == 0:
                out.append([Completion(text="I cannot do that.")] * params.n)
                continue
            out.append(
                [Completion(text=answer(self._text(p), params.seed, j)) for j in range(params.n)]
            )
        return out

    def close(self):
        pass


class StudentDouble:
    """Answers student prompts: right for even-numbered problems, wrong for odd ones."""

    name = "student"
    model_id = "student"

    def __init__(self, right: set[str]):
        self.right = right

    def generate(self, prompts, params):
        out = []
        for p in prompts:
            q = p.split("Question:", 1)[1].split("\n")[0].strip()
            total = sum(numbers_in(q)) + (0 if q in self.right else 5)
            out.append([Completion(text=f"ans = {total}")] * params.n)
        return out

    def close(self):
        pass


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxConfig(max_workers=2)) as sb:
        yield sb


def world(n: int) -> list[Problem]:
    out = []
    for i in range(n):
        q = world_question(f"stage-{i}", 2)
        out.append(Problem.create(q, float(sum(numbers_in(q))), source_dataset="world"))
    return out


def test_rationales_keep_only_verified_distinct_programs(sandbox):
    problems = world(6)
    teacher = ScriptedBackend(garbage_every=3)
    examples, stats = write_rationales(problems, teacher, TeacherConfig(n_samples=4), sandbox)
    assert teacher.calls[0][1].n == 4 and teacher.calls[0][1].seed is not None
    # Problems 0 and 3 got garbage; the others have 3 right samples, of which the same
    # program text appears 3 times -> one distinct verified example each.
    assert {e.problem_id for e in examples} == {p.id for i, p in enumerate(problems) if i % 3}
    assert len(examples) == 4
    assert stats["problems"] == 6 and stats["completions"] == 24
    assert stats["verified"] == 4 and stats["problems_with_rationale"] == 4
    assert stats["duplicate_program"] == 8
    assert sum(v for k, v in stats.items() if k.startswith("no_program:")) == 8
    for e in examples:
        assert e.origin == "original" and e.prompt_version and e.teacher == "scripted-teacher"
        assert e.answer == problems[[p.id for p in problems].index(e.problem_id)].answer


def test_grading_splits_easy_and_hard(sandbox):
    problems = world(6)
    right = {p.question for p in problems[::2]}
    rows, stats = grade_problems(
        problems, StudentDouble(right), RoundsConfig(), sandbox, max_tokens=32
    )
    assert [r.easy for r in rows] == [True, False] * 3
    assert stats["easy"] == 3 and stats["hard"] == 3
    easy, hard = split_by_grade(problems, rows)
    assert easy == problems[::2] and hard == problems[1::2]
    easy, hard = split_by_grade(problems, rows, max_parents=2)
    assert len(easy) == 1 and len(hard) == 1
    with pytest.raises(ValueError, match="not graded"):
        split_by_grade(problems, rows[:-1])


def test_sampled_grading_uses_pass_threshold(sandbox):
    problems = world(2)
    rows, _ = grade_problems(
        problems,
        StudentDouble({problems[0].question}),
        RoundsConfig(grading_mode="sampled", grading_samples=3, pass_threshold=0.5),
        sandbox,
        max_tokens=32,
    )
    assert [(r.n_correct, r.n_samples, r.easy) for r in rows] == [(3, 3, True), (0, 3, False)]


def test_synthesis_records_origin_parent_and_round():
    parents = world(3)
    new, stats = synthesize_problems(
        parents,
        ["complex", "similar", "complex"],
        ScriptedBackend(),
        TeacherConfig(),
        SynthesisConfig(n_complex=2, n_similar=3),
        round_index=2,
    )
    assert stats["complex_generated"] == 4 and stats["similar_generated"] == 3
    assert len(new) == 7 and stats["generated"] == 7
    by_parent = {}
    for p in new:
        assert p.answer is None and p.round == 2
        by_parent.setdefault(p.parent_id, set()).add(p.origin)
    assert by_parent == {
        parents[0].id: {"complex"},
        parents[1].id: {"similar"},
        parents[2].id: {"complex"},
    }
    # complex variations carry one more quantity than their parent
    assert all(len(numbers_in(p.question)) == 3 for p in new if p.origin == "complex")


def test_labelling_votes_and_keeps_agreeing_programs(sandbox):
    problems = [p.model_copy(update={"answer": None}) for p in world(4)]
    teacher = ScriptedBackend(garbage_every=4)
    examples, stats = label_problems(
        problems,
        teacher,
        TeacherConfig(),
        LabelingConfig(n_programs=4, max_rationales=2, agreement_threshold=0.5),
        sandbox,
    )
    # problem 0 got garbage (no answer); the others: 3 of 4 programs agree on the sum
    assert stats["rejected_no_answer"] == 1 and stats["accepted"] == 3
    assert {e.problem_id for e in examples} == {p.id for p in problems[1:]}
    for e in examples:
        assert e.answer == sum(numbers_in(e.question))
    # a threshold above 3/4 rejects them all
    _, strict = label_problems(
        problems,
        teacher,
        TeacherConfig(),
        LabelingConfig(n_programs=4, max_rationales=2, agreement_threshold=0.9),
        sandbox,
    )
    assert strict["accepted"] == 0 and strict["rejected_low_agreement"] == 3


def test_labelling_records_one_verdict_per_problem(sandbox):
    problems = [p.model_copy(update={"answer": None}) for p in world(4)]
    verdicts: list[dict] = []
    _, stats = label_problems(
        problems,
        ScriptedBackend(garbage_every=4),
        TeacherConfig(),
        LabelingConfig(n_programs=4, max_rationales=2, agreement_threshold=0.5),
        sandbox,
        verdicts=verdicts,
    )
    assert [v["problem_id"] for v in verdicts] == [p.id for p in problems]
    assert sum(v["accepted"] for v in verdicts) == stats["accepted"] == 3
    assert [v["reason"] for v in verdicts] == ["no_answer", None, None, None]
    for v, p in zip(verdicts[1:], problems[1:]):
        assert v["vote_answer"] == sum(numbers_in(p.question)) and v["agreement"] == 0.75
        assert v["n_asked"] == 4 and len(v["programs"]) <= 4
        assert all({"sample", "program", "answer"} <= set(prog) for prog in v["programs"])


def test_merge_examples_never_duplicates():
    p = world(1)[0]
    from fdd_core.schemas import Rationale

    r = Rationale(problem_id=p.id, program="ans = 1", answer=1.0, teacher="t", prompt_version="v")
    e = Example.join(p.model_copy(update={"answer": 1.0}), r)
    assert merge_examples([e], [e, e]) == [e]


def test_shards_and_problem_files_round_trip(tmp_path):
    assert shard_bounds(0, 5) == []
    assert shard_bounds(11, 5) == [(0, 5), (5, 10), (10, 11)]
    problems = world(5)
    ref = write_problems(tmp_path, "x", problems)
    assert ref.n == 5 and read_problems(ref) == problems
    assert write_problems(tmp_path, "x", problems) == ref  # content-addressed, idempotent
    rows = [GradeRow(problem_id=p.id, n_correct=1, n_samples=1, easy=True) for p in problems]
    res = save_shard(tmp_path / "s" / "shard-00000.jsonl", rows, {"easy": 5})
    assert res.n_rows == 5 and (tmp_path / "s" / "shard-00000.stats.json").is_file()


def test_grading_pool_is_originals_then_each_dataset_problem_once():
    originals = [Problem.create("Tom has 2 apples and buys 3. How many?", 5.0)]
    child = Problem.create(
        "Sara has 4 pens and buys 6. How many?",
        10.0,
        origin="similar",
        parent_id=originals[0].id,
        round=1,
        source_dataset="fdd-synth",
    )

    def example(problem, program):
        r = Rationale(
            problem_id=problem.id, program=program, answer=problem.answer, teacher="t",
            prompt_version="v",
        )  # fmt: skip
        return Example.join(problem, r)

    examples = [
        example(originals[0], "ans = 2 + 3"),  # already in the pool: not added again
        example(child, "ans = 4 + 6"),
        example(child, "a = 4\nans = a + 6"),  # a second rationale: one pool entry
    ]
    pool = grading_pool(originals, examples)
    assert pool == [originals[0], child]  # the child comes back with every field it had
    assert examples[1].problem() == child
