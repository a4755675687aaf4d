"""The sweep flow: every variant of an experiment as an `fdd-distill` subflow (or deployment run).

Phase 1 computes each shared round 0 once (an `fdd-distill` run of `round0_config` in
`<experiment>/shared/round0-<key>`); phase 2 runs the variants, at most `max_parallel` at
a time, and their round 0 is all cache hits. A variant that fails is recorded with its error
and does not stop the others. `experiment.json` is rewritten after every change, by this
flow only. At the end `fdd compare` runs on the experiment and its table, markdown and plots
are published as Prefect artifacts.

Locally each variant is a subflow, started from a task so that several run at once on a
bounded thread pool. With `deployment` set (e.g. "fdd-distill/fdd-process") each variant is a
run of that deployment (`run_deployment`), so variants spread over the work pool's workers;
the experiment folder must then be on storage the workers share.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from fdd_core.config import RunConfig
from fdd_core.experiments import (
    Experiment,
    SweepSpec,
    Variant,
    finish_status,
    prepare_experiment,
    round0_config,
    to_run,
    variant_config,
)
from fdd_core.reports import now_iso
from flows.common import artifact_key


def _error_text(exc: BaseException) -> str:
    tail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return tail[-2000:]


@task(name="sweep-run", task_run_name="{label}")
def run_one(label: str, config: RunConfig, run_dir: str, deployment: str | None) -> dict:
    """One fdd-distill run (subflow or deployment run); never raises, returns its outcome."""
    try:
        if deployment:
            from prefect.deployments import run_deployment

            flow_run = run_deployment(
                name=deployment,
                parameters={
                    "config": config.model_dump(mode="json"),
                    "run_dir": run_dir,
                    "flow_run_label": label,  # the worker renames the run from this parameter
                },
                flow_run_name=label,
                timeout=None,
                as_subflow=True,
            )
            state = flow_run.state
            if state is None or not state.is_completed():
                name = state.name if state is not None else "unknown"
                return {"status": "failed", "error": f"deployment run {label} ended {name}"}
            return {"status": "completed", "error": None}
        from flows.distill import fdd_distill

        fdd_distill(config=config, run_dir=run_dir, flow_run_label=label)
        return {"status": "completed", "error": None}
    except BaseException as exc:  # a variant's failure is a value here, not a crash
        if isinstance(exc, KeyboardInterrupt):
            raise
        return {"status": "failed", "error": _error_text(exc)}


def _run_all(jobs: list[tuple[str, RunConfig, str]], spec: SweepSpec, on_done) -> None:
    """Submit every job (label, config, run dir); call on_done(label, outcome) as each ends."""
    runner = run_one.with_options()
    futures = {
        runner.submit(label=label, config=cfg, run_dir=run_dir, deployment=spec.deployment): label
        for label, cfg, run_dir in jobs
    }
    for fut in as_completed(list(futures)):
        try:
            outcome = fut.result()
        except BaseException as exc:  # the task itself broke (not the variant)
            outcome = {"status": "failed", "error": _error_text(exc)}
        on_done(futures[fut], outcome)


@flow(name="fdd-sweep", flow_run_name="sweep-{name}", log_prints=True)
def fdd_sweep(spec: SweepSpec, experiment_dir: str, name: str) -> Experiment:
    """Run (or finish) every variant of the experiment; see the module docstring."""
    log = get_run_logger()
    exp = prepare_experiment(spec, experiment_dir, name)
    exp.status = "running"
    exp.save()
    pending = to_run(exp)
    log.info(
        "experiment %s: %d variants, %d to run, %d failed before starting",
        name,
        len(exp.variants),
        len(pending),
        sum(v.status == "failed" for v in exp.variants),
    )
    configs = {
        v.name: variant_config(
            spec, Variant(name=v.name, overrides=v.overrides, seed=v.seed), exp.dir
        )
        for v in pending
    }
    # Phase 1: shared round 0, once per group that a pending variant needs.
    needed = {v.round0_key for v in pending}
    groups = [g for g in exp.shared_round0 if g.key in needed and g.status != "completed"]
    jobs = []
    for g in groups:
        first = next(v for v in pending if v.round0_key == g.key)
        jobs.append((f"{name}-round0-{g.key}", round0_config(configs[first.name]), g.run_dir))
        g.status = "running"
    exp.save()

    def group_done(label: str, outcome: dict) -> None:
        g = next(g for g in groups if label.endswith(g.key))
        g.status, g.error = outcome["status"], outcome["error"]
        if g.error:
            log.warning("shared round 0 %s failed: %s", g.key, g.error)
        exp.save()

    _run_all(jobs, spec, group_done)

    # Phase 2: the variants (their round 0 is cache hits of phase 1).
    jobs = []
    for v in pending:
        v.status, v.attempts, v.started_at, v.finished_at = (
            "running",
            v.attempts + 1,
            now_iso(),
            None,
        )
        v.flow_run_name = f"{name}-{v.name}"
        jobs.append((v.flow_run_name, configs[v.name], v.run_dir))
    exp.save()
    by_label = {v.flow_run_name: v for v in pending}

    def variant_done(label: str, outcome: dict) -> None:
        v = by_label[label]
        v.status, v.error, v.finished_at = outcome["status"], outcome["error"], now_iso()
        log.info("variant %s: %s%s", v.name, v.status, f" ({v.error})" if v.error else "")
        exp.save()

    _run_all(jobs, spec, variant_done)
    exp.status = finish_status(exp)
    exp.save()
    publish_comparison(exp)
    return exp


def publish_comparison(exp: Experiment) -> None:
    """`fdd compare` of the experiment into <experiment>/compare, and as Prefect artifacts."""
    from fdd_core.compare import compare, write_comparison

    log = get_run_logger()
    try:
        comparison = compare([exp.dir])
        out = write_comparison(comparison, Path(exp.dir) / "compare")
    except Exception as exc:  # a report must not turn a finished sweep into a failed one
        log.warning("comparison of %s failed: %s", exp.name, exc)
        return
    key = artifact_key("experiment", exp.name)
    create_table_artifact(
        comparison.summary_rows(),
        key=key + "-table",
        description=f"Experiment {exp.name}: final accuracy per variant (mean, spread)",
    )
    md = out["markdown"].read_text()
    for png in out["plots"]:
        md += f"\n\nPlot: `{png}`"
    create_markdown_artifact(md, key=key + "-compare", description=f"fdd compare {exp.name}")


def run_sweep(
    spec: SweepSpec, experiment_dir: str | Path, name: str, *, return_state: bool = False
):
    """Start the sweep flow with a thread pool bounded by spec.max_parallel."""
    runner = ThreadPoolTaskRunner(max_workers=spec.max_parallel)
    return fdd_sweep.with_options(task_runner=runner)(
        spec=spec, experiment_dir=str(experiment_dir), name=name, return_state=return_state
    )
