"""`fdd lab` and `fdd simteacher`: a controlled experiment with a SIMULATED teacher (not an LLM).

    fdd lab [configs/lab.yaml] [--dial wrong_program=0.2 ...]   the proving ground
    fdd simteacher --port 8765 [--dial ...]                     the simulated teacher alone

`fdd lab` starts the simulated teacher (fdd_core/world/teacher.py: an OpenAI-compatible
server on 127.0.0.1 that answers the teacher prompts with a problem world's exact
operations, plus seeded faults), points the config's teacher at it, scores the untrained
student once as a baseline, runs the ordinary FDD flow (real student training and
evaluation, real openai backend, filters and labelling), and then adds what only a
simulated world can measure to each round's record: label precision and contamination
recall (fdd_core/world/lab.py). The numbers describe the pipeline under a simulated
teacher, not distillation from an LLM.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

from fdd_core.config import ConfigError, load_config

DEFAULT_CONFIG = "configs/lab.yaml"
DEFAULT_PORT = 8765
BANNER = (
    "fdd lab: a CONTROLLED EXPERIMENT. The teacher is the SIMULATED TEACHER (exact answers "
    "from a problem world, with seeded faults), not an LLM; the student, its training, its "
    "evaluation and every pipeline stage are real."
)
# The lab's fault dials: a teacher that is mostly right, as a strong LLM would be, with
# every fault the pipeline is meant to handle present at a measurable rate.
LAB_DIALS = {
    "wrong_program": 0.1,
    "unparseable": 0.05,
    "duplicate_exact": 0.05,
    "duplicate_near": 0.05,
    "test_paraphrase": 0.1,
    "disagree": 0.15,
}


def _dial_args(p: argparse.ArgumentParser, defaults: dict[str, float]) -> None:
    shown = ", ".join(f"{k}={v}" for k, v in defaults.items()) or "all 0 (exact)"
    p.add_argument(
        "--dial",
        action="append",
        default=[],
        metavar="NAME=RATE",
        help=f"a fault rate of the simulated teacher (repeatable; defaults: {shown})",
    )
    p.add_argument("--teacher-seed", type=int, default=0, help="seed of the teacher's faults")


def add_parser(subparsers) -> None:
    """Add `lab` and `simteacher` to the `fdd` command's subparsers."""
    p = subparsers.add_parser(
        "lab",
        help="controlled experiment: real student, SIMULATED teacher (label precision, "
        "contamination recall)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", default=DEFAULT_CONFIG, help="run config (YAML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port of the simulated teacher on 127.0.0.1 (default {DEFAULT_PORT}; a fixed "
        "port keeps the config hash, and so the run folder and caches, stable across re-runs; "
        "a busy port falls back to a free one)",
    )
    p.add_argument("--run-name", help="run folder name (default: lab-<config hash>)")
    p.add_argument("--no-baseline", action="store_true", help="skip scoring the untrained student")
    _dial_args(p, LAB_DIALS)
    p.set_defaults(func=cmd_lab)

    p = subparsers.add_parser(
        "simteacher",
        help="serve the SIMULATED teacher (OpenAI API) for controlled experiments",
        description="Serve the simulated teacher: an OpenAI-compatible server that answers "
        "fdd's teacher prompts with the lab world's exact operations and seeded faults. For "
        "controlled experiments only; never a teacher for real runs.",
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port on 127.0.0.1")
    p.add_argument("--ledger", help="JSON-lines file of every problem it writes")
    p.add_argument("--log", help="JSON-lines request log")
    _dial_args(p, {})
    p.set_defaults(func=cmd_simteacher)


def _dials(args, defaults: dict[str, float]):
    from fdd_core.world.teacher import Dials, parse_dials

    try:
        return parse_dials(args.dial, Dials(**defaults))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cmd_simteacher(args) -> int:
    from fdd_core.world import World
    from fdd_core.world.teacher import SimulatedTeacher, SimulatedTeacherServer

    teacher = SimulatedTeacher(
        World(), _dials(args, {}), seed=args.teacher_seed, ledger=args.ledger
    )
    server = SimulatedTeacherServer(teacher, port=args.port, log_path=args.log)
    print(
        f"simulated teacher (controlled experiments only) on {server.base_url}, model "
        f"{teacher.model_name}, dials {teacher.dials.model_dump()}",
        flush=True,
    )
    server.serve_until_stopped()  # Ctrl-C or SIGTERM
    return 0


def cmd_lab(args) -> int:
    from fdd_core.world import World
    from fdd_core.world.lab import LEDGER_NAME, TEACHER_DIR
    from fdd_core.world.teacher import SimulatedTeacher, SimulatedTeacherServer
    from fdd_core.world.world import check

    cfg = load_config(args.config, args.overrides)
    if cfg.teacher.backend != "openai":
        raise ConfigError(f"{args.config}: fdd lab needs teacher.backend 'openai'")
    stale = check()
    if stale:
        raise ConfigError(
            "the lab world's files differ from its generator: "
            + "; ".join(stale)
            + " (run `python -m fdd_core.world --write`)"
        )
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's temporary server gets 20 s to start by default: too little on a busy laptop.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    print(BANNER, flush=True)
    world = World()
    teacher = SimulatedTeacher(world, _dials(args, LAB_DIALS), seed=args.teacher_seed)
    port = args.port
    if port and not _port_free(port):
        print(f"port {port} is busy: the simulated teacher takes a free port", flush=True)
        port = 0
    server = SimulatedTeacherServer(teacher, port=port)
    cfg.teacher.base_url = server.base_url
    cfg.teacher.model = teacher.model_name
    if args.run_name:
        cfg.storage.run_name = args.run_name
    elif not cfg.storage.run_name:
        cfg.storage.run_name = f"lab-{cfg.config_hash()[:10]}"

    from flows.distill import run_dir_for

    run_dir = run_dir_for(cfg)
    tdir = run_dir / TEACHER_DIR
    tdir.mkdir(parents=True, exist_ok=True)
    teacher.ledger = tdir / LEDGER_NAME
    world.load_ledger(teacher.ledger)  # a resumed run: problems written before
    server.httpd.RequestHandlerClass.log_path = tdir / "requests.jsonl"
    print(
        f"simulated teacher on {server.base_url} (model {teacher.model_name}, dials "
        f"{teacher.dials.model_dump()})\nrun folder: {run_dir}",
        flush=True,
    )
    start = time.monotonic()
    with server:
        from fdd_core.preflight import preflight

        preflight(cfg)
        baseline = None if args.no_baseline else _baseline(cfg, run_dir)
        from flows.distill import fdd_distill

        result = fdd_distill(config=cfg)
        requests = dict(teacher.stats)
    elapsed = time.monotonic() - start
    rounds = _add_lab_metrics(cfg, world, result)
    summary = _summary(cfg, teacher, rounds, baseline, requests, tdir, elapsed)
    from fdd_core.io import atomic_write_json

    atomic_write_json(Path(result.run_dir) / "lab.json", summary)
    _print(summary, rounds, baseline, result.run_dir)
    return 0


def _baseline(cfg, run_dir: Path) -> dict[str, float]:
    """Accuracy of the untrained student (cached in the run folder).

    Scored with `student.max_tokens` new tokens per program rather than the benchmark's
    256: an untrained model rarely stops by itself, so the full budget would cost minutes
    of CPU time for the same (near-zero) score.
    """
    path = run_dir / "baseline" / "results.json"
    if not path.is_file():
        from fdd_core.evaluation import benchmark_model

        print("scoring the untrained student (baseline) ...", flush=True)
        benchmark_model(
            cfg.student.model,
            cfg.evaluation.benchmarks,
            eval_cfg=cfg.evaluation,
            sandbox_cfg=cfg.sandbox,
            student_cfg=cfg.student,
            out_dir=run_dir / "baseline",
            cache_dir=cfg.storage.cache_dir,
            max_tokens=cfg.student.max_tokens,
        )
    data = json.loads(path.read_text())
    return {k: float(v["accuracy"]) for k, v in data["benchmarks"].items()}


def _add_lab_metrics(cfg, world, result):
    from fdd_core.reports import write_report, write_run_record
    from fdd_core.world.lab import run_round_metrics

    rounds = [
        r.model_copy(
            update={"lab_metrics": run_round_metrics(world, result.run_dir, r.round, r.dataset)}
        )
        for r in result.rounds
    ]
    write_run_record(result.run_dir, cfg, status="completed", rounds=rounds)
    write_report(result.run_dir, rounds)
    return rounds


def _request_counts(log: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            kind = json.loads(line).get("kind", "?")
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def _summary(cfg, teacher, rounds, baseline, stats, tdir: Path, elapsed: float) -> dict:
    return {
        "what": "fdd lab: controlled experiment with the SIMULATED teacher",
        "teacher": teacher.model_name,
        "dials": teacher.dials.model_dump(),
        "config_hash": cfg.config_hash(),
        "wall_time_s": round(elapsed, 1),
        "baseline_accuracy": baseline,
        "teacher_http_requests": _request_counts(tdir / "requests.jsonl"),
        "teacher_stats": stats,
        "rounds": [
            {
                "round": r.round,
                "examples": r.dataset.n_rows,
                "added": r.added,
                "counts_by_origin": r.counts_by_origin,
                "accuracy": r.accuracy(),
                "lab_metrics": r.lab_metrics,
                "dropped": r.dropped,
                "stats": r.stats,
            }
            for r in rounds
        ],
    }


def _print(summary: dict, rounds, baseline, run_dir: str) -> None:
    from fdd_core.reports import text_table

    rows = []
    if baseline is not None:
        rows.append(
            {"round": "untrained", **{f"acc:{k}": round(v, 4) for k, v in baseline.items()}}
        )
    for r in rounds:
        row = r.row()
        row.pop("dataset", None)
        rows.append(row)
    print()
    print(text_table(rows), end="")
    print()
    req = summary["teacher_http_requests"]
    print(
        f"simulated teacher: {sum(req.values())} HTTP requests logged for this run folder "
        f"({', '.join(f'{k} {v}' for k, v in sorted(req.items())) or 'none: all cached'})"
    )
    print(f"wall time: {summary['wall_time_s'] / 60:.1f} min")
    print(f"run folder: {run_dir}  (lab.json, run.json, report.md)")
    print(
        "label_precision / contamination_recall: measured against the world's truth; "
        "they exist only because the teacher is simulated."
    )
    sys.stdout.flush()
