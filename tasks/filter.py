"""Drop malformed, duplicate and contaminated questions before labelling."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from pydantic import BaseModel

from fdd_core.config import EvaluationConfig, FilteringConfig
from fdd_core.filtering import filter_problems
from fdd_core.io import read_jsonl
from fdd_core.leakage import leakage_scores
from fdd_core.records import write_candidates
from fdd_core.schemas import DatasetRef, Problem
from fdd_core.stages import (
    ProblemsRef,
    ShardResult,
    benchmark_test_questions,
    filtering_inputs,
    read_problems,
    write_problems,
)
from fdd_core.store import read_examples
from tasks.common import CACHE_POLICY


class FilterOutput(BaseModel):
    kept: ProblemsRef
    candidates: int
    dropped: dict[str, int]
    examples: dict[str, list[str]]


@task(
    name="filter",
    task_run_name="filter-r{round_index}",
    cache_policy=CACHE_POLICY,
    persist_result=True,
)
def filter_candidates(
    candidates: list[ShardResult],
    dataset: DatasetRef | None,
    originals: ProblemsRef,
    filtering: FilteringConfig,
    evaluation: EvaluationConfig,
    run_dir: str,
    round_index: int,
    code_version: str,
) -> FilterOutput:
    """Dedup against each other and the dataset; decontaminate against benchmark tests."""
    new = [Problem.model_validate(r) for shard in candidates for r in read_jsonl(shard.path)]
    examples = read_examples(dataset) if dataset else []
    pool = read_problems(originals)
    existing = filtering_inputs(examples, pool)
    all_tests = benchmark_test_questions(evaluation) if evaluation.benchmarks else {}
    tests = all_tests if filtering.decontaminate else {}
    result = filter_problems(new, existing=existing, test_sets=tests, cfg=filtering)
    kept = write_problems(Path(run_dir) / f"round-{round_index}", "filtered", result.kept)
    record_candidates(run_dir, round_index, new, result, pool, examples, all_tests, filtering)
    return FilterOutput(
        kept=kept, candidates=len(new), dropped=dict(result.dropped), examples=result.examples
    )


def record_candidates(run_dir, round_index, new, result, pool, examples, tests, filtering) -> None:
    """The run report's record of every generated question: parent, verdict, leakage."""
    parents = {p.id: p.question for p in pool}
    parents.update((e.problem_id, e.question) for e in examples)
    scores = leakage_scores([p.question for p in new], tests, filtering)
    rows = [
        {
            "problem_id": p.id,
            "question": p.question,
            "origin": p.origin,
            "parent_id": p.parent_id,
            "parent_question": parents.get(p.parent_id),
            "kept": reason is None,
            "reason": reason,
            "benchmark": bench,
            "leakage": score,
        }
        for p, reason, bench, score in zip(new, result.reasons, result.benchmarks, scores)
    ]
    write_candidates(run_dir, round_index, rows)
