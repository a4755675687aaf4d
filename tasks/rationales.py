"""Round 0: the teacher writes k programs per problem; verified ones become examples."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from fdd_core.config import SandboxConfig, StorageConfig, TeacherConfig
from fdd_core.stages import ProblemsRef, ShardResult, read_problems, save_shard, write_rationales
from tasks.common import (
    CACHE_POLICY,
    get_model_backend,
    get_sandbox,
    shard_limit,
    teacher_request_cache,
)


@task(
    name="rationales",
    task_run_name="rationales-r{round_index}-s{shard_index}",
    cache_policy=CACHE_POLICY,
    persist_result=True,
)
def rationale_shard(
    problems: ProblemsRef,
    shard_index: int,
    bounds: tuple[int, int],
    teacher: TeacherConfig,
    sandbox: SandboxConfig,
    storage: StorageConfig,
    run_dir: str,
    round_index: int,
    code_version: str,
    shard_timeout_s: float | None = None,
) -> ShardResult:
    """Write and verify rationales for one shard of problems."""
    with shard_limit(shard_timeout_s, "rationales", round_index, shard_index):
        chunk = read_problems(problems, bounds)
        backend = get_model_backend(teacher, storage.cache_dir)
        examples, stats = write_rationales(
            chunk,
            backend,
            teacher,
            get_sandbox(sandbox),
            rel_tol=sandbox.rel_tol,
            cache=teacher_request_cache(teacher, storage),
            round_index=round_index,
        )
        out = (
            Path(run_dir) / f"round-{round_index}" / "rationales" / f"shard-{shard_index:05d}.jsonl"
        )
        return save_shard(out, examples, stats)
