"""The teacher writes new problems: complex variations of easy ones, similar ones for hard."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from fdd_core.config import StorageConfig, SynthesisConfig, TeacherConfig
from fdd_core.stages import ProblemsRef, ShardResult, read_problems, save_shard, synthesize_problems
from tasks.common import CACHE_POLICY, get_model_backend, teacher_request_cache


@task(
    name="synthesize",
    task_run_name="synthesize-{kind}-r{round_index}-s{shard_index}",
    cache_policy=CACHE_POLICY,
    persist_result=True,
)
def synthesize_shard(
    parents: ProblemsRef,
    kind: str,
    shard_index: int,
    bounds: tuple[int, int],
    teacher: TeacherConfig,
    synthesis: SynthesisConfig,
    storage: StorageConfig,
    run_dir: str,
    round_index: int,
    code_version: str,
) -> ShardResult:
    """New problems from one shard of parents (all of one kind)."""
    chunk = read_problems(parents)[bounds[0] : bounds[1]]
    backend = get_model_backend(teacher, storage.cache_dir)
    problems, stats = synthesize_problems(
        chunk,
        [kind] * len(chunk),
        backend,
        teacher,
        synthesis,
        round_index=round_index,
        cache=teacher_request_cache(teacher, storage),
    )
    out = (
        Path(run_dir) / f"round-{round_index}" / f"synth-{kind}" / f"shard-{shard_index:05d}.jsonl"
    )
    return save_shard(out, problems, stats)
