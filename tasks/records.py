"""Records for the run report that no stage writes on its own way (see fdd_core.records)."""

from __future__ import annotations

from prefect import task

from fdd_core.config import EvaluationConfig, FilteringConfig
from fdd_core.leakage import leakage_scores
from fdd_core.records import write_reference_leakage
from fdd_core.stages import ProblemsRef, benchmark_test_questions, read_problems
from tasks.common import CACHE_POLICY


@task(
    name="leakage-reference",
    task_run_name="leakage-reference",
    cache_policy=CACHE_POLICY,
    persist_result=True,
)
def leakage_reference_task(
    originals: ProblemsRef,
    evaluation: EvaluationConfig,
    filtering: FilteringConfig,
    run_dir: str,
    code_version: str,
) -> int:
    """Leakage scores of the original training questions: the reference distribution."""
    problems = read_problems(originals)
    tests = benchmark_test_questions(evaluation)
    scores = leakage_scores([p.question for p in problems], tests, filtering)
    rows = [{"problem_id": p.id, "leakage": s} for p, s in zip(problems, scores)]
    write_reference_leakage(run_dir, rows)
    return len(rows)
