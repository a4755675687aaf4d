"""The benchmark stage: score a round's student on the configured test sets.

One name throughout: module `tasks.benchmark`, Prefect task `benchmark`, function
`benchmark_task`; the core function is `fdd_core.evaluation.benchmark_model` (shared with
`fdd eval`).
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from fdd_core.config import EvaluationConfig, SandboxConfig, StudentConfig
from fdd_core.evaluation import benchmark_model
from fdd_core.schemas import ModelRef
from tasks.common import CACHE_POLICY


@task(
    name="benchmark",
    task_run_name="benchmark-r{round_index}",
    cache_policy=CACHE_POLICY,
    persist_result=True,
)
def benchmark_task(
    model: ModelRef | None,
    student: StudentConfig,
    evaluation: EvaluationConfig,
    sandbox: SandboxConfig,
    run_dir: str,
    round_index: int,
    code_version: str,
    cache_dir: str | None = None,
    folder: str = "eval",
) -> dict[str, dict]:
    """Accuracy and breakdown per benchmark ({} when no benchmark is configured).

    `folder`: where under the round folder the predictions go ("eval-base" for the base
    model measured as the run report's reference).
    """
    if not evaluation.benchmarks:
        return {}
    out = Path(run_dir) / f"round-{round_index}" / folder
    results = benchmark_model(
        model if model is not None else student.model,
        evaluation.benchmarks,
        eval_cfg=evaluation,
        sandbox_cfg=sandbox,
        student_cfg=student,
        out_dir=out,
        cache_dir=cache_dir,  # storage.cache_dir, like every task that loads a model
    )
    return {name: res.summary() for name, res in results.items()}
