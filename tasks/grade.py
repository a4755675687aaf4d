"""Grade the previous round's student on the grading pool: easy = solved, hard = failed."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from fdd_core.config import RoundsConfig, SandboxConfig, StorageConfig, StudentConfig
from fdd_core.io import read_jsonl
from fdd_core.schemas import ModelRef
from fdd_core.stages import (
    GradeRow,
    ProblemsRef,
    ShardResult,
    grade_problems,
    read_problems,
    save_shard,
    split_by_grade,
    stage_seed,
    student_backend_config,
    write_problems,
)
from tasks.common import CACHE_POLICY, get_model_backend, get_sandbox


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
) -> ShardResult:
    """The previous student answers one shard of the grading pool."""
    chunk = read_problems(problems)[bounds[0] : bounds[1]]
    backend = get_model_backend(student_backend_config(student, student_model), storage.cache_dir)
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


@task(
    name="split-easy-hard",
    task_run_name="split-r{round_index}",
    cache_policy=CACHE_POLICY,
    persist_result=True,
)
def split_easy_hard(
    pool: ProblemsRef,
    graded: list[ShardResult],
    max_parents: int | None,
    run_dir: str,
    round_index: int,
    code_version: str,
) -> tuple[ProblemsRef, ProblemsRef]:
    """Write the easy and the hard problems of the pool to their own files."""
    rows = [GradeRow.model_validate(r) for shard in graded for r in read_jsonl(shard.path)]
    easy, hard = split_by_grade(read_problems(pool), rows, max_parents=max_parents)
    folder = Path(run_dir) / f"round-{round_index}"
    return write_problems(folder, "easy", easy), write_problems(folder, "hard", hard)
