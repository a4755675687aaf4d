"""The grading pool when it is 'all': the original problems plus every dataset problem."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from fdd_core.schemas import DatasetRef
from fdd_core.stages import ProblemsRef, grading_pool, read_problems, write_problems
from fdd_core.store import read_examples
from tasks.common import CACHE_POLICY


@task(
    name="grading-pool",
    task_run_name="grading-pool-r{round_index}",
    cache_policy=CACHE_POLICY,
    persist_result=True,
)
def grading_pool_task(
    originals: ProblemsRef, dataset: DatasetRef, run_dir: str, round_index: int, code_version: str
) -> ProblemsRef:
    """Originals first, then each labelled problem of the dataset once."""
    pool = grading_pool(read_problems(originals), read_examples(dataset))
    return write_problems(Path(run_dir) / f"round-{round_index}", "pool", pool)
