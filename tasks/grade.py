"""Grade the previous round's student on the grading pool: easy = solved, hard = failed."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from fdd_core.config import RoundsConfig, SandboxConfig, StorageConfig, StudentConfig
from fdd_core.schemas import ModelRef
from fdd_core.stages import (
    ProblemsRef,
    ShardResult,
    grade_problems,
    read_problems,
    save_shard,
    stage_seed,
    student_backend_config,
)
from tasks.common import CACHE_POLICY, get_model_backend, get_sandbox, shard_limit


@task(
    name="grade",
    task_run_name="grade-r{round_index}-s{shard_index}",
    cache_policy=CACHE_POLICY,
    persist_result=True,
)
def grade_shard(
    problems: ProblemsRef,
    shard_index: int,
    bounds: tuple[int, int],
    student_model: ModelRef,
    student: StudentConfig,
    rounds: RoundsConfig,
    sandbox: SandboxConfig,
    storage: StorageConfig,
    run_dir: str,
    round_index: int,
    code_version: str,
    shard_timeout_s: float | None = None,
) -> ShardResult:
    """The previous student answers one shard of the grading pool."""
    with shard_limit(shard_timeout_s, "grade", round_index, shard_index):
        chunk = read_problems(problems, bounds)
        backend = get_model_backend(
            student_backend_config(student, student_model), storage.cache_dir
        )
        rows, stats = grade_problems(
            chunk,
            backend,
            rounds,
            get_sandbox(sandbox),
            max_tokens=student.max_tokens,
            rel_tol=sandbox.rel_tol,
            seed=stage_seed(0, "grade", round_index),
        )
        out = Path(run_dir) / f"round-{round_index}" / "grade" / f"shard-{shard_index:05d}.jsonl"
        return save_shard(out, rows, stats)
