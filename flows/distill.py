"""The parent FDD flow: round 0 (initialization), then feedback rounds 1..R.

It passes dataset and model references from round to round (never datasets in memory),
stops early when a round adds nothing, and keeps `run.json` and `report.md` current in the
run folder. Re-running the same config re-uses the same run folder, so every finished task
is a cache hit and a killed run continues from its last finished shard.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from signal import SIG_DFL

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import TerminationSignal

from fdd_core import runlock
from fdd_core.config import RunConfig
from fdd_core.experiments import round0_config, shared_round0_dir
from fdd_core.reports import (
    DistillResult,
    RoundResult,
    markdown_table,
    rounds_markdown,
    write_report,
    write_run_record,
)
from fdd_core.schedules import is_template, plan_continuation, render_run_name
from fdd_core.versioning import code_fingerprint, file_fingerprint
from flows.common import artifact_key, task_options
from flows.report import publish_report_artifacts
from flows.round import fdd_round
from flows.runners import make_task_runner
from tasks.common import check_result_files, close_sandboxes, result_storage
from tasks.data import load_problems


def run_name_for(cfg: RunConfig, when: datetime | None = None) -> str:
    """The run folder's name. A template (`nightly-{date}`) is filled from `when`, by default
    the scheduled start of the current flow run (now, outside one): every call for one flow
    run gives the same name, and each tick of a schedule a folder of its own."""
    name = cfg.storage.run_name
    if not name:
        return f"fdd-{cfg.config_hash()[:10]}"
    if not is_template(name):
        return name
    if when is None:
        from prefect.runtime import flow_run

        when = flow_run.scheduled_start_time
    return render_run_name(name, when=when, hash_=cfg.config_hash())


def run_dir_for(cfg: RunConfig, when: datetime | None = None) -> Path:
    return Path(cfg.storage.root).expanduser().resolve() / run_name_for(cfg, when)


def _flow_run_name() -> str:
    from prefect.runtime import flow_run

    given = flow_run.parameters.get("flow_run_label")
    if given:  # a name chosen by the caller (a sweep's variant label) is kept as it is
        return str(given)
    cfg = flow_run.parameters.get("config")
    if isinstance(cfg, dict):
        cfg = RunConfig.model_validate(cfg)
    return run_name_for(cfg) if isinstance(cfg, RunConfig) else "fdd-distill"


@flow(name="fdd-distill", flow_run_name=_flow_run_name, log_prints=True)
def fdd_distill(
    config: RunConfig,
    run_dir: str | None = None,
    flow_run_label: str | None = None,
    add_rounds: int = 0,
) -> DistillResult:
    """Distill the teacher into a student over 1 + config.rounds.n_rounds rounds.

    `flow_run_label` names the flow run (default: the run name from the config). For a run
    of a deployment pass it rather than `flow_run_name=` to `run_deployment`: the worker that
    executes the run renames it from the flow's own template, so only a parameter survives.

    `add_rounds` > 0 continues instead: the latest run of this config (or the one in
    `run_dir`) gets that many rounds after its last finished one (a schedule's way to make
    progress; fdd_core/schedules.py). With no earlier run, the config runs as given.
    """
    log = get_run_logger()
    cfg = config
    if add_rounds:
        plan = plan_continuation(cfg, add_rounds, run_dir)
        if plan is None:
            log.info(
                "add_rounds=%d: no earlier run of this config under %s; running it as given "
                "(rounds.n_rounds=%d)",
                add_rounds,
                cfg.storage.root,
                cfg.rounds.n_rounds,
            )
        else:
            log.info("add_rounds=%d: %s", add_rounds, plan.describe())
            cfg, run_dir = plan.config, str(plan.run_dir)
    run_path = Path(run_dir).resolve() if run_dir else run_dir_for(cfg)
    run_path.mkdir(parents=True, exist_ok=True)
    # One run per folder: refuse at once (naming the holder) before touching run.json.
    lock = runlock.acquire(run_path, command=" ".join(sys.argv)[:300])
    state = _RunState(cfg, run_path, lock)
    try:
        with _stop_on_signals(state):
            return _distill(state, log)
    finally:
        lock.release()


# What stopping a run from outside looks like here: Ctrl-C (KeyboardInterrupt), SIGTERM
# (turned into KeyboardInterrupt below when nobody else handles it), Prefect's own
# TerminationSignal (a worker or the UI cancelling a deployment run), or SystemExit.
CANCELLED = (KeyboardInterrupt, SystemExit, TerminationSignal)
# After Ctrl-C/SIGTERM the process exits at the latest this long after the signal, even
# when Prefect is still reporting the crash to an API server that is gone (Ctrl-C in a
# terminal stops `fdd run`'s temporary server too) or a task thread is mid-step.
CANCEL_GRACE_S = 5.0


@dataclass
class _RunState:
    cfg: RunConfig
    run_path: Path
    lock: runlock.RunLock
    rounds: list[RoundResult] = field(default_factory=list)
    cancelled: str | None = None  # the signal that stopped the run


def _record_cancel(state: _RunState, why: str) -> None:
    write_run_record(
        state.run_path, state.cfg, status="cancelled", rounds=state.rounds, error=why[:2000]
    )
    close_sandboxes()


def _begin_cancel(state: _RunState, why: str) -> None:
    """Once per run: record `cancelled`, stop the sandboxes, arm the exit watchdog."""
    if state.cancelled is not None:
        return
    state.cancelled = why
    _record_cancel(state, f"cancelled by {why}")
    threading.Thread(target=_hard_stop, args=(state,), daemon=True).start()


def _hard_stop(state: _RunState) -> None:
    time.sleep(CANCEL_GRACE_S)
    from fdd_core.procs import stop_descendants

    print(
        f"fdd: the run did not stop within {CANCEL_GRACE_S:g} s of {state.cancelled}; "
        "stopping it now (status: cancelled; start it again to resume)",
        file=sys.stderr,
        flush=True,
    )
    stop_descendants(grace_s=2.0)
    state.lock.release()
    os._exit(130)


@contextlib.contextmanager
def _stop_on_signals(state: _RunState):
    """Ctrl-C and SIGTERM: record `cancelled`, stop the sandboxes, raise KeyboardInterrupt.

    The status is written in the signal handler itself, so it is on disk before Prefect
    starts reporting the crash; a watchdog then makes sure the process is gone within
    CANCEL_GRACE_S. Without this, SIGTERM kills the process on the spot (no status, sandbox
    workers in sessions of their own left running). A handler installed before (Prefect's
    SIGTERM bridge, which raises TerminationSignal so a deployment run is marked Cancelled)
    is called after the status is written.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        name = signal.Signals(signum).name
        _begin_cancel(state, name)
        before = previous.get(signum)
        if callable(before) and before is not signal.default_int_handler:
            before(signum, frame)  # Prefect's SIGTERM bridge: TerminationSignal, as it expects
        raise KeyboardInterrupt(f"cancelled by {name}")

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before if before is not None else SIG_DFL)


def _distill(state: _RunState, log) -> DistillResult:
    cfg, run_path, rounds = state.cfg, state.run_path, state.rounds
    run_name = run_path.name
    write_run_record(run_path, cfg, status="running", rounds=rounds)
    try:
        # Round 0 (and the originals it reads) may live in a folder shared with other runs.
        shared = shared_round0_dir(cfg)
        r0_path, r0_cfg = (shared, round0_config(cfg)) if shared else (run_path, cfg)
        store = result_storage(cfg.storage, run_path)
        if isinstance(store, Path):  # a resumed run: damaged results are recomputed, loudly
            check_result_files(store, log)
        fingerprint = "|".join(file_fingerprint(s.path) for s in cfg.data.train)
        originals = load_problems.with_options(**task_options(r0_cfg, str(r0_path)))(
            cfg.data, str(r0_path), fingerprint, code_fingerprint()
        )
        log.info("run folder %s: %d original problems", run_path, originals.n)
        round_flow = fdd_round.with_options(task_runner=make_task_runner(cfg.orchestration))
        dataset, student, stopped_early = None, None, False
        for r in range(cfg.rounds.n_rounds + 1):
            result = round_flow(
                config=r0_cfg if r == 0 else cfg,
                round_index=r,
                run_dir=str(r0_path if r == 0 else run_path),
                run_name=run_name,
                originals=originals,
                dataset=dataset,
                student=student,
            )
            rounds.append(result)
            write_run_record(run_path, cfg, status="running", rounds=rounds)
            publish_report_artifacts(run_path, run_name)  # the report so far, in the UI
            dataset, student = result.dataset, result.model or student
            no_growth = r > 0 and result.added == 0 and cfg.synthesis.strategy != "none"
            if no_growth and cfg.rounds.stop_when_no_growth:
                log.info("round %d added no example: stopping early", r)
                stopped_early = r < cfg.rounds.n_rounds
                break
    except BaseException as exc:
        if state.cancelled or isinstance(exc, CANCELLED):
            # Stopped from outside: say so (not "failed"), stop the sandbox workers now;
            # the next start of the same config resumes from the finished shards.
            # Prefect's own SIGTERM bridge (reinstalled inside each round) lands here.
            _begin_cancel(state, type(exc).__name__)
            log.warning("run cancelled (%r); start it again to resume", exc)
            from fdd_core.procs import stop_descendants

            stop_descendants(grace_s=2.0)  # Prefect may re-kill itself with SIGTERM next
            raise
        error = "\n".join([repr(exc), *getattr(exc, "__notes__", [])])[:4000]
        write_run_record(run_path, cfg, status="failed", rounds=rounds, error=error)
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
