"""One FDD round as a DAG of cached tasks.

Round 0: rationales -> grow -> train -> benchmark.
Round r: grade -> split easy/hard -> synthesize -> filter -> label -> grow -> train -> benchmark.
The flow only wires tasks and publishes the round's artifacts; the logic is in fdd_core.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from fdd_core.config import RunConfig
from fdd_core.dataset_card import write_dataset_card
from fdd_core.io import atomic_write_json
from fdd_core.records import StageClock, append_timings, funnel_steps, write_funnel
from fdd_core.reports import RoundResult, round_markdown
from fdd_core.schemas import DatasetRef, ModelRef
from fdd_core.stages import ProblemsRef, merge_stats, split_teacher_usage, stage_seed
from fdd_core.store import read_manifest
from fdd_core.strategies import GRADE_FREE
from fdd_core.training.reuse import reusable_student
from fdd_core.versioning import code_fingerprint
from flows.common import artifact_key, model_on_gpu, run_mapped, task_options, teacher_on_gpu
from tasks.benchmark import benchmark_task
from tasks.filter import filter_candidates
from tasks.grade import grade_shard
from tasks.grow import grow_dataset
from tasks.label import label_shard
from tasks.rationales import rationale_shard
from tasks.records import leakage_reference_task
from tasks.synthesize import plan_synthesis_task, synthesize_shard
from tasks.train import train_student_task


@flow(name="fdd-round", flow_run_name="{run_name}-round-{round_index}")
def fdd_round(
    config: RunConfig,
    round_index: int,
    run_dir: str,
    run_name: str,
    originals: ProblemsRef,
    dataset: DatasetRef | None = None,
    student: ModelRef | None = None,
) -> RoundResult:
    """Run round `round_index` on top of `dataset` (D_{r-1}) and `student` (round r-1)."""
    log = get_run_logger()
    cfg = config
    cv = code_fingerprint()
    shard = cfg.orchestration.shard_size
    gpu_teacher = teacher_on_gpu(cfg)
    gpu_student = model_on_gpu(cfg.student)
    gen_opts = task_options(cfg, run_dir, retry=True, gpu=gpu_teacher)
    plain_opts = task_options(cfg, run_dir)
    common = {
        "storage": cfg.storage,
        "run_dir": run_dir,
        "round_index": round_index,
        "code_version": cv,
        # A limit each shard task enforces itself (fdd_core.deadline); not in cache keys.
        "shard_timeout_s": cfg.orchestration.shard_timeout_s,
    }
    stats: dict[str, dict[str, int]] = {}
    dropped: dict[str, int] = {}
    clock = StageClock()  # wall time per stage, for the run report
    gpu_stages = {"train", "benchmark"} if gpu_student else set()
    base_metrics: dict = {}

    if round_index == 0:
        log.info(
            "round 0: teacher writes %d programs for each of %d problems",
            cfg.teacher.n_samples,
            originals.n,
        )
        new_shards = run_mapped(
            rationale_shard.with_options(**gen_opts),
            originals.n,
            shard,
            lambda i, b: dict(
                problems=originals,
                shard_index=i,
                bounds=b,
                teacher=cfg.teacher,
                sandbox=cfg.sandbox,
                **common,
            ),
            label="rationales",
            progress_key=artifact_key(run_name, "r0-rationales-progress"),
        )
        stats["rationales"] = merge_stats(s.stats for s in new_shards)
        clock.lap("rationales")
        gpu_stages |= {"rationales"} if gpu_teacher else set()
        if cfg.evaluation.benchmarks:
            leakage_reference_task.with_options(**plain_opts)(
                originals, cfg.evaluation, cfg.filtering, run_dir, cv
            )
            clock.lap("leakage reference")
        if cfg.evaluation.measure_base and cfg.evaluation.benchmarks:
            base_metrics = benchmark_task.with_options(
                **task_options(cfg, run_dir, gpu=gpu_student)
            )(None, cfg.student, cfg.evaluation, cfg.sandbox, run_dir, round_index, cv, "eval-base")
            clock.lap("benchmark base")
            gpu_stages |= {"benchmark base"} if gpu_student else set()
    else:
        if student is None:
            log.warning(
                "round %d: no trained student (empty dataset); grading the base model", round_index
            )
        pool = originals
        if cfg.rounds.grading_pool == "all" and dataset is not None:
            from tasks.pool import grading_pool_task

            pool = grading_pool_task.with_options(**plain_opts)(
                originals, dataset, run_dir, round_index, cv
            )
        graded = []
        if cfg.synthesis.grade_unused or cfg.synthesis.strategy not in GRADE_FREE:
            graded = run_mapped(
                grade_shard.with_options(**task_options(cfg, run_dir, retry=True, gpu=gpu_student)),
                pool.n,
                shard,
                lambda i, b: dict(
                    problems=pool,
                    shard_index=i,
                    bounds=b,
                    student_model=student,
                    student=cfg.student,
                    rounds=cfg.rounds,
                    sandbox=cfg.sandbox,
                    **common,
                ),
                label="grade",
                progress_key=artifact_key(run_name, f"r{round_index}-grade-progress"),
            )
            stats["grade"] = merge_stats(s.stats for s in graded)
            clock.lap("grade")
            gpu_stages |= {"grade"} if gpu_student else set()
        plan = plan_synthesis_task.with_options(**plain_opts)(
            pool,
            graded,
            cfg.synthesis,
            stage_seed(cfg.teacher.seed, "plan", round_index),
            run_dir,
            round_index,
            cv,
        )
        stats["plan"] = plan.stats
        synth = []
        for kind, parents, counts in (
            ("complex", plan.complex, plan.complex_counts),
            ("similar", plan.similar, plan.similar_counts),
        ):
            synth += run_mapped(
                synthesize_shard.with_options(**gen_opts),
                parents.n,
                shard,
                lambda i, b, parents=parents, kind=kind, counts=counts: dict(
                    parents=parents,
                    kind=kind,
                    shard_index=i,
                    bounds=b,
                    teacher=cfg.teacher,
                    synthesis=cfg.synthesis,
                    counts=counts[b[0] : b[1]],
                    **common,
                ),
                label=f"synthesize {kind}",
                progress_key=artifact_key(run_name, f"r{round_index}-synth-{kind}-progress"),
            )
        stats["synthesize"] = merge_stats(s.stats for s in synth)
        clock.lap("synthesize")
        filtered = filter_candidates.with_options(**plain_opts)(
            synth, dataset, originals, cfg.filtering, cfg.evaluation, run_dir, round_index, cv
        )
        dropped = filtered.dropped
        stats["filter"] = {"candidates": filtered.candidates, "kept": filtered.kept.n}
        clock.lap("filter")
        new_shards = run_mapped(
            label_shard.with_options(**gen_opts),
            filtered.kept.n,
            shard,
            lambda i, b: dict(
                problems=filtered.kept,
                shard_index=i,
                bounds=b,
                teacher=cfg.teacher,
                labeling=cfg.labeling,
                sandbox=cfg.sandbox,
                **common,
            ),
            label="label",
            progress_key=artifact_key(run_name, f"r{round_index}-label-progress"),
        )
        stats["label"] = merge_stats(s.stats for s in new_shards)
        clock.lap("label")
        gpu_stages |= {"synthesize", "label"} if gpu_teacher else set()

    new_dataset = grow_dataset.with_options(**plain_opts)(
        new_shards, dataset, str(Path(run_dir) / "datasets"), round_index, cfg.config_hash(), cv
    )
    added = new_dataset.n_rows - (dataset.n_rows if dataset else 0)
    clock.lap("grow")
    reused, why = reusable_student(student, new_dataset, cfg.student.model, cfg.training)
    if reused is not None:
        # Nothing new to learn: training would make the same student again.
        log.info(
            "round %d: reusing the previous round's student %s instead of training (%s)",
            round_index,
            reused.path,
            why,
        )
        model = reused
        stats["train"] = {"reused_previous_student": 1}
    else:
        model = train_student_task.with_options(**task_options(cfg, run_dir, gpu=gpu_student))(
            new_dataset, cfg.student, cfg.training, cfg.storage.cache_dir, run_dir, round_index, cv
        )
    clock.lap("train")
    metrics = benchmark_task.with_options(**task_options(cfg, run_dir, gpu=gpu_student))(
        model,
        cfg.student,
        cfg.evaluation,
        cfg.sandbox,
        run_dir,
        round_index,
        cv,
        cache_dir=cfg.storage.cache_dir,
    )
    clock.lap("benchmark")

    manifest = read_manifest(new_dataset)
    stats, teacher_usage = split_teacher_usage(stats)
    result = RoundResult(
        round=round_index,
        dataset=new_dataset,
        model=model,
        added=added,
        counts_by_origin=manifest.get("counts_by_origin", {}),
        stats=stats,
        dropped=dropped,
        metrics=metrics,
        teacher_usage=teacher_usage,
        base_metrics=base_metrics,
        wall_time_s=dict(clock.stages),
        gpu_stages=sorted(gpu_stages & set(clock.stages)),
    )
    write_funnel(run_dir, round_index, funnel_steps(round_index, stats, dropped, added))
    append_timings(run_dir, round_index, clock, gpu_stages=result.gpu_stages)
    write_dataset_card(new_dataset, cfg)
    atomic_write_json(
        Path(run_dir) / f"round-{round_index}" / "summary.json", result.model_dump(mode="json")
    )
    publish_round_artifacts(result, run_name)
    log.info(
        "round %d done: %d examples (+%d), accuracy %s",
        round_index,
        new_dataset.n_rows,
        added,
        result.accuracy(),
    )
    return result


def publish_round_artifacts(result: RoundResult, run_name: str) -> None:
    """Table, markdown summary and dataset link for the Prefect UI."""
    r = result.round
    create_table_artifact(
        [result.row()],
        key=artifact_key(run_name, f"round-{r}-table"),
        description=f"FDD round {r}: dataset size by origin, easy/hard, synthesized, "
        "dropped, accepted, accuracy per benchmark",
    )
    create_markdown_artifact(
        round_markdown(result),
        key=artifact_key(run_name, f"round-{r}-summary"),
        description=f"FDD round {r} summary",
    )
    create_link_artifact(
        Path(result.dataset.path).resolve().as_uri(),
        link_text=f"dataset {result.dataset.version_id[:12]}",
        key=artifact_key(run_name, f"round-{r}-dataset"),
        description=f"Dataset version written by round {r}",
    )
