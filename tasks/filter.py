"""Drop malformed, duplicate and contaminated questions before labelling."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from pydantic import BaseModel

from fdd_core.config import EvaluationConfig, FilteringConfig
from fdd_core.filtering import filter_problems
from fdd_core.io import read_jsonl
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
    existing = filtering_inputs(read_examples(dataset) if dataset else [], read_problems(originals))
    tests = benchmark_test_questions(evaluation) if filtering.decontaminate else {}
    result = filter_problems(new, existing=existing, test_sets=tests, cfg=filtering)
    kept = write_problems(Path(run_dir) / f"round-{round_index}", "filtered", result.kept)
    return FilterOutput(
        kept=kept, candidates=len(new), dropped=dict(result.dropped), examples=result.examples
    )
