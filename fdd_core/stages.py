"""The FDD stages as plain functions: rationales, grading, synthesis, labelling, growth.

Each stage takes problems, a backend and its config section, and returns its output plus a
dict of counters for the round report. Nothing here knows about Prefect: tasks/ wraps these
functions, shards their inputs and caches their outputs. A bad generation never raises;
it lowers the yield and shows up in the counters.

Seeds: every sampled call derives its seed from (config seed, stage, round), and the
backends mix the prompt into it, so a prompt gets the same samples whichever shard it is in.

The references tasks pass each other (`ProblemsRef`, `ShardResult`, shard files) live in
`fdd_core.shards` and are re-exported here.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from pydantic import BaseModel, ConfigDict

from fdd_core.backends.base import Backend, SamplingParams
from fdd_core.backends.cache import RequestCache, cached_generate
from fdd_core.config import (
    EvaluationConfig,
    LabelingConfig,
    RoundsConfig,
    StudentConfig,
    SynthesisConfig,
    TeacherConfig,
)
from fdd_core.grading import answers_match, majority_vote
from fdd_core.parsing import extract_problems, extract_program
from fdd_core.prompts import (
    PROGRAM_FENCE,
    STUDENT_STOP,
    complex_messages,
    load_template,
    program_completion_prompt,
    program_messages,
    similar_messages,
    student_prompt,
)
from fdd_core.sandbox import Sandbox
from fdd_core.schemas import Example, ModelRef, Problem, Rationale
from fdd_core.shards import (  # re-exported: the tasks import them from here
    ProblemsRef,
    ShardResult,
    merge_stats,
    problems_digest,
    read_problems,
    save_shard,
    shard_bounds,
    write_problems,
)

# Few-shot teachers tend to go on with a made-up next "Question:" after their program.
PROGRAM_STOP = ("\nQuestion:",)
# Completion-style prompts end inside an open fence: the closing fence ends the program.
COMPLETION_STOP = ("```", "\nQuestion:")
SYNTH_SOURCE = "fdd-synthetic"


# --------------------------------------------------------------------------- seeds and counters


def stage_seed(base: int, stage: str, round_index: int) -> int:
    digest = hashlib.sha256(f"{base}|{stage}|{round_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


TEACHER_PREFIX = "teacher:"


def _add_usage(stats: Counter, usage: dict[str, int]) -> None:
    """A stage's teacher usage rides in its counters as `teacher:<key>` (merged per shard)."""
    for key, value in usage.items():
        stats[TEACHER_PREFIX + key] += value


def split_teacher_usage(
    stats: dict[str, dict[str, int]],
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """(stage counters without the teacher's, teacher usage per stage) of a round.

    The usage per stage has the keys of `cache.USAGE_KEYS`: requests, prompt_tokens,
    completion_tokens, cache_hits. Stages that did not call the teacher are left out.
    """
    from fdd_core.backends.cache import USAGE_KEYS

    plain: dict[str, dict[str, int]] = {}
    usage: dict[str, dict[str, int]] = {}
    for stage, counts in stats.items():
        plain[stage] = {k: v for k, v in counts.items() if not k.startswith(TEACHER_PREFIX)}
        got = {
            k[len(TEACHER_PREFIX) :]: v for k, v in counts.items() if k.startswith(TEACHER_PREFIX)
        }
        if got:
            usage[stage] = {k: int(got.get(k, 0)) for k in USAGE_KEYS}
    return plain, usage


def _teacher_params(
    tcfg: TeacherConfig, n: int, max_tokens: int, seed: int, stop: tuple[str, ...] = ()
) -> SamplingParams:
    if tcfg.temperature == 0:
        return SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens, stop=stop)
    return SamplingParams(
        n=n,
        temperature=tcfg.temperature,
        top_p=tcfg.top_p,
        max_tokens=max_tokens,
        seed=seed,
        stop=stop,
    )


def _program_prompts(problems: Sequence[Problem], tcfg: TeacherConfig) -> list:
    if tcfg.prompt_style == "completion":
        return [program_completion_prompt(p.question) for p in problems]
    return [program_messages(p.question) for p in problems]


def _program_stop(tcfg: TeacherConfig) -> tuple[str, ...]:
    return COMPLETION_STOP if tcfg.prompt_style == "completion" else PROGRAM_STOP


def _program_outputs(outs: list[list], tcfg: TeacherConfig) -> list[list]:
    """Completion-style outputs lack the opening fence that the prompt held: put it back."""
    if tcfg.prompt_style != "completion":
        return outs
    return [
        [replace(c, text=PROGRAM_FENCE + c.text + "\n```") for c in samples] for samples in outs
    ]


@dataclass
class _Run:
    """Programs parsed out of completions, executed in one sandbox batch."""

    owner: list[tuple[int, int]]  # (problem index, sample index) for each program
    programs: list[str]
    answers: list[float | None]
    statuses: list[str]


def _parse_and_run(completions: list[list], sandbox: Sandbox, stats: Counter) -> _Run:
    owner, programs = [], []
    for i, samples in enumerate(completions):
        for j, comp in enumerate(samples):
            stats["completions"] += 1
            parsed = extract_program(comp.text)
            if parsed.program is None:
                stats[f"no_program:{parsed.reason}"] += 1
                continue
            owner.append((i, j))
            programs.append(parsed.program)
    stats["programs"] += len(programs)
    results = sandbox.run_many(programs) if programs else []
    for res in results:
        stats[f"exec:{res.status}"] += 1
    return _Run(
        owner=owner,
        programs=programs,
        answers=[r.answer if r.status == "ok" else None for r in results],
        statuses=[r.status for r in results],
    )


def _teacher_programs(
    problems: Sequence[Problem],
    teacher: Backend,
    tcfg: TeacherConfig,
    n: int,
    stage: str,
    round_index: int,
    sandbox: Sandbox,
    cache: RequestCache | None,
    stats: Counter,
) -> tuple[_Run, int]:
    """Ask the teacher for n programs per problem, parse and execute them.

    Returns the executed programs and how many programs were asked for per problem (1 when
    the teacher is greedy).
    """
    template = load_template("program")
    params = _teacher_params(
        tcfg, n, tcfg.max_tokens, stage_seed(tcfg.seed, stage, round_index), _program_stop(tcfg)
    )
    usage: dict[str, int] = {}
    outs = cached_generate(
        teacher,
        _program_prompts(problems, tcfg),
        params,
        cache=cache,
        prompt_version=f"{template.version}/{tcfg.prompt_style}",
        usage=usage,
    )
    _add_usage(stats, usage)
    return _parse_and_run(_program_outputs(outs, tcfg), sandbox, stats), params.n


# --------------------------------------------------------------------------- round 0


def write_rationales(
    problems: Sequence[Problem],
    teacher: Backend,
    tcfg: TeacherConfig,
    sandbox: Sandbox,
    *,
    rel_tol: float = 1e-4,
    cache: RequestCache | None = None,
    round_index: int = 0,
) -> tuple[list[Example], dict[str, int]]:
    """k teacher programs per problem; the ones whose answer matches the reference are kept."""
    template = load_template("program")
    stats: Counter = Counter(problems=len(problems), duplicate_program=0)
    run, _ = _teacher_programs(
        problems, teacher, tcfg, tcfg.n_samples, "rationales", round_index, sandbox, cache, stats
    )
    examples: list[Example] = []
    seen: set[str] = set()
    solved: set[int] = set()
    for (i, j), program, answer in zip(run.owner, run.programs, run.answers):
        problem = problems[i]
        if answer is None or not answers_match(answer, problem.answer, rel_tol=rel_tol):
            continue
        rationale = Rationale(
            problem_id=problem.id,
            program=program,
            answer=answer,
            teacher=teacher.model_id,
            prompt_version=template.version,
            sample_index=j,
        )
        if rationale.id in seen:  # the same program sampled twice trains nothing new
            stats["duplicate_program"] += 1
            continue
        seen.add(rationale.id)
        solved.add(i)
        examples.append(Example.join(problem, rationale))
    stats["verified"] = len(examples)
    stats["problems_with_rationale"] = len(solved)
    return examples, dict(stats)


# --------------------------------------------------------------------------- grading


class GradeRow(BaseModel):
    model_config = ConfigDict(frozen=True)
    problem_id: str
    n_correct: int
    n_samples: int
    easy: bool


def grade_problems(
    problems: Sequence[Problem],
    student: Backend,
    rcfg: RoundsConfig,
    sandbox: Sandbox,
    *,
    max_tokens: int,
    rel_tol: float = 1e-4,
    seed: int = 0,
) -> tuple[list[GradeRow], dict[str, int]]:
    """The previous student solves each problem: solved = easy, failed = hard."""
    if rcfg.grading_mode == "greedy":
        params = SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens, stop=STUDENT_STOP)
    else:
        params = SamplingParams(
            n=rcfg.grading_samples,
            temperature=rcfg.grading_temperature,
            max_tokens=max_tokens,
            stop=STUDENT_STOP,
            seed=seed,
        )
    stats: Counter = Counter(problems=len(problems))
    outs = student.generate([student_prompt(p.question) for p in problems], params)
    run = _parse_and_run(outs, sandbox, stats)
    correct = Counter()
    for (i, _), answer in zip(run.owner, run.answers):
        if answer is not None and answers_match(answer, problems[i].answer, rel_tol=rel_tol):
            correct[i] += 1
    rows = []
    for i, problem in enumerate(problems):
        rate = correct[i] / params.n
        easy = rate >= (rcfg.pass_threshold if rcfg.grading_mode == "sampled" else 1.0)
        rows.append(
            GradeRow(problem_id=problem.id, n_correct=correct[i], n_samples=params.n, easy=easy)
        )
    stats["easy"] = sum(r.easy for r in rows)
    stats["hard"] = len(rows) - stats["easy"]
    return rows, dict(stats)


def split_by_grade(
    pool: Sequence[Problem], rows: Sequence[GradeRow], *, max_parents: int | None = None
) -> tuple[list[Problem], list[Problem]]:
    """(easy, hard) problems of the pool, in pool order; optionally capped in total.

    The cap keeps the easy/hard proportions of the pool (rounded, at least one of each
    kind that exists), so a small budget still feeds both kinds of synthesis.
    """
    easy_ids = {r.problem_id for r in rows if r.easy}
    graded = {r.problem_id for r in rows}
    missing = [p.id for p in pool if p.id not in graded]
    if missing:
        raise ValueError(f"{len(missing)} pool problems were not graded, e.g. {missing[0]}")
    easy = [p for p in pool if p.id in easy_ids]
    hard = [p for p in pool if p.id not in easy_ids]
    if max_parents is not None and len(easy) + len(hard) > max_parents:
        n_easy = round(max_parents * len(easy) / (len(easy) + len(hard)))
        if easy and n_easy == 0:
            n_easy = 1
        if hard and n_easy == max_parents and max_parents > 1:
            n_easy -= 1
        easy, hard = easy[:n_easy], hard[: max_parents - n_easy]
    return easy, hard


def student_backend_config(student: StudentConfig, model: ModelRef | None) -> StudentConfig:
    """The model config that runs a trained student (the base model when none was trained)."""
    from fdd_core.training import student_model_config

    return student if model is None else student_model_config(model, student)


# --------------------------------------------------------------------------- synthesis

Kind = Literal["complex", "similar"]


def synthesize_problems(
    parents: Sequence[Problem],
    kinds: Sequence[Kind],
    teacher: Backend,
    tcfg: TeacherConfig,
    scfg: SynthesisConfig,
    *,
    round_index: int,
    cache: RequestCache | None = None,
    counts: Sequence[int] | None = None,
) -> tuple[list[Problem], dict[str, int]]:
    """More complex variations of easy problems, similar new problems for hard ones.

    `counts` (from a strategy's plan) says how many problems to ask of each parent; None
    asks `n_complex` / `n_similar` of every parent.
    """
    if len(parents) != len(kinds) or (counts is not None and len(counts) != len(parents)):
        raise ValueError("parents, kinds and counts must have the same length")
    stats: Counter = Counter(parents=len(parents), complex_generated=0, similar_generated=0)
    out: list[Problem] = []
    wants = [
        (counts[i] if counts is not None else scfg.n_complex if k == "complex" else scfg.n_similar)
        for i, k in enumerate(kinds)
    ]
    for kind, want in sorted({(k, w) for k, w in zip(kinds, wants)}):
        idx = [i for i, k in enumerate(kinds) if k == kind and wants[i] == want]
        if not idx or want == 0:
            continue
        make = complex_messages if kind == "complex" else similar_messages
        template = load_template(kind)
        params = _teacher_params(
            tcfg, 1, scfg.max_tokens, stage_seed(tcfg.seed, f"synth-{kind}", round_index)
        )
        usage: dict[str, int] = {}
        outs = cached_generate(
            teacher,
            [make(parents[i].question, want) for i in idx],
            params,
            cache=cache,
            prompt_version=template.version,
            usage=usage,
        )
        _add_usage(stats, usage)
        for i, samples in zip(idx, outs):
            parent = parents[i]
            stats[f"{kind}_prompts"] += 1
            got = 0
            for comp in samples:
                parsed = extract_problems(comp.text, max_n=want)
                if not parsed.problems:
                    stats[f"{kind}_unparsed:{parsed.reason}"] += 1
                for question in parsed.problems:
                    out.append(
                        Problem.create(
                            question,
                            None,
                            origin=kind,
                            parent_id=parent.id,
                            round=round_index,
                            source_dataset=SYNTH_SOURCE,
                        )
                    )
                    got += 1
            stats[f"{kind}_generated"] += got
    stats["generated"] = len(out)
    return out, dict(stats)


# --------------------------------------------------------------------------- labelling


def label_problems(
    problems: Sequence[Problem],
    teacher: Backend,
    tcfg: TeacherConfig,
    lcfg: LabelingConfig,
    sandbox: Sandbox,
    *,
    rel_tol: float = 1e-4,
    cache: RequestCache | None = None,
    round_index: int = 0,
    verdicts: list[dict] | None = None,
) -> tuple[list[Example], dict[str, int]]:
    """n teacher programs per new problem; accept the majority answer when enough agree.

    `verdicts`, when given, receives one record per problem (its programs, the vote and
    whether it was accepted, or why not) for the run report.
    """
    template = load_template("program")
    stats: Counter = Counter(
        problems=len(problems), accepted=0, rejected_no_answer=0, rejected_low_agreement=0
    )
    run, n_asked = _teacher_programs(
        problems, teacher, tcfg, lcfg.n_programs, "label", round_index, sandbox, cache, stats
    )
    by_problem: dict[int, list[tuple[int, str, float | None]]] = {}
    for (i, j), program, answer in zip(run.owner, run.programs, run.answers):
        by_problem.setdefault(i, []).append((j, program, answer))
    examples: list[Example] = []
    for i, problem in enumerate(problems):
        got = by_problem.get(i, [])
        # Programs that failed to run or were never parsed still count as votes against:
        # agreement is measured over all n programs the teacher was asked for.
        answers = [a for _, _, a in got] + [None] * (n_asked - len(got))
        vote = majority_vote(answers, rel_tol=rel_tol)
        reason = None
        if vote.answer is None:
            reason = "no_answer"
        elif vote.agreement < lcfg.agreement_threshold:
            reason = "low_agreement"
        if verdicts is not None:
            verdicts.append(_label_verdict(problem, got, n_asked, vote, reason))
        if reason is not None:
            stats[f"rejected_{reason}"] += 1
            continue
        labelled = problem.model_copy(update={"answer": vote.answer})
        kept: set[str] = set()
        for j, program, answer in got:
            if len(kept) >= lcfg.max_rationales:
                break
            if answer is None or not answers_match(answer, vote.answer, rel_tol=rel_tol):
                continue
            rationale = Rationale(
                problem_id=problem.id,
                program=program,
                answer=answer,
                teacher=teacher.model_id,
                prompt_version=template.version,
                sample_index=j,
            )
            if rationale.id in kept:
                continue
            kept.add(rationale.id)
            examples.append(Example.join(labelled, rationale))
        stats["accepted"] += 1
    stats["examples"] = len(examples)
    return examples, dict(stats)


def _label_verdict(problem: Problem, got: list, n_asked: int, vote, reason: str | None) -> dict:
    return {
        "problem_id": problem.id,
        "question": problem.question,
        "origin": problem.origin,
        "parent_id": problem.parent_id,
        "round": problem.round,
        "programs": [{"sample": j, "program": p, "answer": a} for j, p, a in got],
        "n_asked": n_asked,
        "vote_answer": vote.answer,
        "agreement": vote.agreement,
        "accepted": reason is None,
        "reason": reason,
    }


# --------------------------------------------------------------------------- growth


def merge_examples(previous: Sequence[Example], new: Iterable[Example]) -> list[Example]:
    """D_r = D_{r-1} + new, dropping rows whose id (problem + program) is already there."""
    seen = {e.id for e in previous}
    merged = list(previous)
    for e in new:
        if e.id not in seen:
            seen.add(e.id)
            merged.append(e)
    return merged


def benchmark_test_questions(evaluation: EvaluationConfig) -> dict[str, list[str]]:
    """Test questions of every configured benchmark, for decontamination."""
    from fdd_core.data import load_benchmark

    out = {}
    for name in evaluation.benchmarks:
        result = load_benchmark(name, evaluation.data_paths.get(name), split="test", strict=False)
        out[name] = [p.question for p in result.problems]
    return out


def grading_pool(originals: Sequence[Problem], examples: Sequence[Example]) -> list[Problem]:
    """Originals first, then each problem of the dataset once (rounds.grading_pool 'all')."""
    pool = list(originals)
    seen = {p.id for p in pool}
    for e in examples:
        if e.problem_id not in seen:
            seen.add(e.problem_id)
            pool.append(e.problem())
    return pool


def filtering_inputs(examples: Sequence[Example], originals: Sequence[Problem]) -> list[str]:
    """Every question already in the dataset (and the original pool) for dedup."""
    seen: dict[str, None] = {}
    for q in (e.question for e in examples):
        seen.setdefault(q, None)
    for p in originals:
        seen.setdefault(p.question, None)
    return list(seen)


__all__ = [
    "benchmark_test_questions",
    "split_by_grade",
    "student_backend_config",
    "GradeRow",
    "ProblemsRef",
    "ShardResult",
    "filtering_inputs",
    "grade_problems",
    "grading_pool",
    "label_problems",
    "merge_examples",
    "merge_stats",
    "problems_digest",
    "read_problems",
    "save_shard",
    "shard_bounds",
    "split_teacher_usage",
    "stage_seed",
    "synthesize_problems",
    "write_problems",
    "write_rationales",
]
