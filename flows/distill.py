"""The parent FDD flow: round 0 (initialization), then feedback rounds 1..R.

It passes dataset and model references from round to round (never datasets in memory),
stops early when a round adds nothing, and keeps `run.json` and `report.md` current in the
run folder. Re-running the same config re-uses the same run folder, so every finished task
is a cache hit and a killed run continues from its last finished shard.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from fdd_core.config import RunConfig
from fdd_core.reports import (
    DistillResult,
    RoundResult,
    markdown_table,
    rounds_markdown,
    write_report,
    write_run_record,
)
from fdd_core.versioning import code_fingerprint, file_fingerprint
from flows.common import artifact_key, task_options
from flows.report import publish_report_artifacts
from flows.round import fdd_round
from flows.runners import make_task_runner
from tasks.data import load_problems


def run_name_for(cfg: RunConfig) -> str:
    return cfg.storage.run_name or f"fdd-{cfg.config_hash()[:10]}"


def run_dir_for(cfg: RunConfig) -> Path:
    return Path(cfg.storage.root).expanduser().resolve() / run_name_for(cfg)


def _flow_run_name() -> str:
    from prefect.runtime import flow_run

    cfg = flow_run.parameters.get("config")
    if isinstance(cfg, dict):
        cfg = RunConfig.model_validate(cfg)
    return run_name_for(cfg) if isinstance(cfg, RunConfig) else "fdd-distill"


@flow(name="fdd-distill", flow_run_name=_flow_run_name, log_prints=True)
def fdd_distill(config: RunConfig, run_dir: str | None = None) -> DistillResult:
    """Distill the teacher into a student over 1 + config.rounds.n_rounds rounds."""
    log = get_run_logger()
    cfg = config
    run_path = Path(run_dir).resolve() if run_dir else run_dir_for(cfg)
    run_path.mkdir(parents=True, exist_ok=True)
    run_name = run_path.name
    rounds: list[RoundResult] = []
    write_run_record(run_path, cfg, status="running", rounds=rounds)
    try:
        fingerprint = "|".join(file_fingerprint(s.path) for s in cfg.data.train)
        originals = load_problems.with_options(**task_options(cfg, str(run_path)))(
            cfg.data, str(run_path), fingerprint, code_fingerprint()
        )
        log.info("run folder %s: %d original problems", run_path, originals.n)
        round_flow = fdd_round.with_options(task_runner=make_task_runner(cfg.orchestration))
        dataset, student, stopped_early = None, None, False
        for r in range(cfg.rounds.n_rounds + 1):
            result = round_flow(
                config=cfg,
                round_index=r,
                run_dir=str(run_path),
                run_name=run_name,
                originals=originals,
                dataset=dataset,
                student=student,
            )
            rounds.append(result)
            write_run_record(run_path, cfg, status="running", rounds=rounds)
            publish_report_artifacts(run_path, run_name)  # the report so far, in the UI
            dataset, student = result.dataset, result.model or student
            if r > 0 and result.added == 0 and cfg.rounds.stop_when_no_growth:
                log.info("round %d added no example: stopping early", r)
                stopped_early = r < cfg.rounds.n_rounds
                break
    except BaseException as exc:
        write_run_record(run_path, cfg, status="failed", rounds=rounds, error=repr(exc)[:2000])
        raise
    write_run_record(run_path, cfg, status="completed", rounds=rounds)
    write_final_report(run_path, rounds)
    create_markdown_artifact(
        "# FDD run\n\n" + markdown_table([r.row() for r in rounds]),
        key=artifact_key(run_name, "summary"),
        description=f"FDD run {run_name}: one row per round",
    )
    return DistillResult(run_dir=str(run_path), rounds=rounds, stopped_early=stopped_early)


def write_final_report(run_path: Path, rounds: list[RoundResult]) -> Path:
    """report.html, report.md and the PNGs; the counters-only report.md if that fails."""
    from fdd_core.report import write_run_report

    try:
        return write_run_report(run_path, appendix=rounds_markdown(rounds))["html"]
    except Exception as exc:  # noqa: BLE001 - a finished run keeps its results regardless
        get_run_logger().warning("the run report could not be built (%r): report.md only", exc)
        return write_report(run_path, rounds)
