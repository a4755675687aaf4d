"""The teacher writes new problems: complex variations of easy ones, similar ones for hard."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from pydantic import BaseModel

from fdd_core.config import StorageConfig, SynthesisConfig, TeacherConfig
from fdd_core.io import read_jsonl
from fdd_core.stages import (
    GradeRow,
    ProblemsRef,
    ShardResult,
    read_problems,
    save_shard,
    synthesize_problems,
    write_problems,
)
from fdd_core.strategies import plan_synthesis
from tasks.common import CACHE_POLICY, get_model_backend, shard_limit, teacher_request_cache


class SynthesisPlanOut(BaseModel):
    """A round's plan as files: parents of each kind, and how many problems each is asked."""

    complex: ProblemsRef
    similar: ProblemsRef
    complex_counts: list[int]
    similar_counts: list[int]
    stats: dict[str, int]


@task(
    name="plan-synthesis",
    task_run_name="plan-synthesis-r{round_index}",
    cache_policy=CACHE_POLICY,
    persist_result=True,
)
def plan_synthesis_task(
    pool: ProblemsRef,
    graded: list[ShardResult],
    synthesis: SynthesisConfig,
    seed: int,
    run_dir: str,
    round_index: int,
    code_version: str,
) -> SynthesisPlanOut:
    """Pick the parents of the round's new problems by `synthesis.strategy` (see strategies)."""
    rows = [GradeRow.model_validate(r) for shard in graded for r in read_jsonl(shard.path)]
    problems = read_problems(pool)
    plan = plan_synthesis(
        synthesis.strategy,
        problems,
        {r.problem_id for r in rows if r.easy},
        n_complex=synthesis.n_complex,
        n_similar=synthesis.n_similar,
        budget=synthesis.budget,
        max_parents=synthesis.max_parents_per_round,
        seed=seed,
    )
    by_id = {p.id: p for p in problems}
    folder = Path(run_dir) / f"round-{round_index}"
    refs = {
        kind: write_problems(folder, f"parents-{kind}", [by_id[r.parent_id] for r in reqs])
        for kind, reqs in (
            ("complex", plan.of_kind("complex")),
            ("similar", plan.of_kind("similar")),
        )
    }
    return SynthesisPlanOut(
        complex=refs["complex"],
        similar=refs["similar"],
        complex_counts=[r.count for r in plan.of_kind("complex")],
        similar_counts=[r.count for r in plan.of_kind("similar")],
        stats=plan.stats(),
    )


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
    counts: list[int] | None = None,
    shard_timeout_s: float | None = None,
) -> ShardResult:
    """New problems from one shard of parents (all of one kind; `counts` per parent)."""
    with shard_limit(shard_timeout_s, f"synthesize-{kind}", round_index, shard_index):
        chunk = read_problems(parents, bounds)
        backend = get_model_backend(teacher, storage.cache_dir)
        problems, stats = synthesize_problems(
            chunk,
            [kind] * len(chunk),
            backend,
            teacher,
            synthesis,
            round_index=round_index,
            cache=teacher_request_cache(teacher, storage),
            counts=counts,
        )
        out = (
            Path(run_dir)
            / f"round-{round_index}"
            / f"synth-{kind}"
            / f"shard-{shard_index:05d}.jsonl"
        )
        return save_shard(out, problems, stats)
