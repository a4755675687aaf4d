"""Label new problems by agreement among n teacher programs."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from fdd_core.config import LabelingConfig, SandboxConfig, StorageConfig, TeacherConfig
from fdd_core.records import write_label_verdicts
from fdd_core.stages import ProblemsRef, ShardResult, label_problems, read_problems, save_shard
from tasks.common import (
    CACHE_POLICY,
    get_model_backend,
    get_sandbox,
    shard_limit,
    teacher_request_cache,
)


@task(
    name="label",
    task_run_name="label-r{round_index}-s{shard_index}",
    cache_policy=CACHE_POLICY,
    persist_result=True,
)
def label_shard(
    problems: ProblemsRef,
    shard_index: int,
    bounds: tuple[int, int],
    teacher: TeacherConfig,
    labeling: LabelingConfig,
    sandbox: SandboxConfig,
    storage: StorageConfig,
    run_dir: str,
    round_index: int,
    code_version: str,
    shard_timeout_s: float | None = None,
) -> ShardResult:
    """Vote on one shard of new problems; accepted ones become examples."""
    with shard_limit(shard_timeout_s, "label", round_index, shard_index):
        chunk = read_problems(problems, bounds)
        backend = get_model_backend(teacher, storage.cache_dir)
        verdicts: list[dict] = []
        examples, stats = label_problems(
            chunk,
            backend,
            teacher,
            labeling,
            get_sandbox(sandbox),
            rel_tol=sandbox.rel_tol,
            cache=teacher_request_cache(teacher, storage),
            round_index=round_index,
            verdicts=verdicts,
        )
        write_label_verdicts(run_dir, round_index, shard_index, verdicts)
        out = Path(run_dir) / f"round-{round_index}" / "label" / f"shard-{shard_index:05d}.jsonl"
        return save_shard(out, examples, stats)
