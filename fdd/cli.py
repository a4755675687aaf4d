"""`fdd`: the command line.

    fdd run CONFIG [--set a.b=c ...]   run the FDD parent flow (rounds 0..R)
    fdd runs list                      runs under the storage root
    fdd data show VERSION              a dataset version: counts, lineage, a few examples
    fdd config show [CONFIG]           the fully resolved config (defaults filled in)
    fdd eval --model M --benchmark B   score a model on a benchmark
    fdd deploy / fdd setup             Prefect deployments and the gpu concurrency limit
    fdd sweep CONFIG --vary K=V1,V2    variants of a config as one experiment
    fdd compare RUN_OR_EXPERIMENT...   accuracy, data and teacher cost side by side, plots
    fdd lab [CONFIG]                   controlled experiment with the SIMULATED teacher

Prefect is imported only by the commands that run flows, so `fdd --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from fdd_core.config import EMBEDDED_MODEL, ConfigError, RunConfig, dump_config, load_config
from fdd_core.schedules import RunNameError, check_run_name

EMBEDDED_NOTE = (
    "Note: the teacher is the embedded SmolLM2-135M-Instruct. It runs anywhere (no GPU, no "
    "network) and proves the wiring end to end, but it is far too weak to teach: expect few "
    "verified programs and near-zero accuracy. For real runs point the teacher at a strong "
    "model behind an OpenAI-compatible endpoint, e.g.\n"
    "    vllm serve Qwen/Qwen2.5-72B-Instruct --port 8000\n"
    "    fdd run configs/cluster-example.yaml --set teacher.base_url=http://HOST:8000/v1"
)


def _add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    if required:
        p.add_argument("config", help="run config (YAML), e.g. configs/quickstart.yaml")
    else:
        p.add_argument("config", nargs="?", help="run config (YAML); defaults when omitted")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field, e.g. --set teacher.n_samples=8 (repeatable)",
    )


def _load(args) -> RunConfig:
    return load_config(args.config, args.overrides)


# --------------------------------------------------------------------------- run


def cmd_run(args) -> int:
    cfg = _load(args)
    if args.run_name:
        try:
            cfg.storage.run_name = check_run_name(args.run_name)
        except RunNameError as exc:
            raise SystemExit(f"fdd run: --run-name: {exc}") from None
    if args.add_rounds < 0:
        raise SystemExit(f"fdd run: --add-rounds must be 1 or more (got {args.add_rounds})")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if cfg.teacher.model == EMBEDDED_MODEL and cfg.teacher.backend == "hf":
        print(EMBEDDED_NOTE, flush=True)
    if not args.skip_preflight:
        from fdd_core.preflight import preflight

        print("checking the config, data, models and endpoints ...", flush=True)
        preflight(cfg)
    from fdd_core.reports import text_table
    from fdd_core.schedules import plan_continuation
    from flows.distill import fdd_distill, run_dir_for

    plan = plan_continuation(cfg, args.add_rounds) if args.add_rounds else None
    if plan is not None:
        print(f"--add-rounds {args.add_rounds}: {plan.describe()}", flush=True)
        cfg, run_dir = plan.config, plan.run_dir
    else:
        if args.add_rounds:
            print(
                f"--add-rounds {args.add_rounds}: no earlier run of this config under "
                f"{cfg.storage.root}; running it as given (rounds.n_rounds={cfg.rounds.n_rounds})",
                flush=True,
            )
        run_dir = run_dir_for(cfg, when=datetime.now(timezone.utc))  # a template: named now
    print(f"run folder: {run_dir}", flush=True)
    refuse_if_locked(run_dir)
    start = time.monotonic()
    result = fdd_distill(config=cfg, run_dir=str(run_dir), flow_run_label=run_dir.name)
    elapsed = time.monotonic() - start
    print()
    print(text_table([r.row() for r in result.rounds]), end="")
    print()
    print(
        f"finished {len(result.rounds)} round(s) in {elapsed / 60:.1f} min"
        + (" (stopped early: a round added nothing)" if result.stopped_early else "")
    )
    print(f"run folder:   {result.run_dir}")
    print(f"datasets:     {Path(result.run_dir) / 'datasets'}")
    if result.rounds and result.rounds[-1].model is not None:
        print(f"last student: {result.rounds[-1].model.path}")
    print(f"report:       {Path(result.run_dir) / 'report.html'} (and report.md)")
    print(
        "inspect with: fdd runs list   |   fdd data show "
        f"{result.rounds[-1].dataset.version_id[:12] if result.rounds else 'VERSION'}"
    )
    if cfg.teacher.model == EMBEDDED_MODEL and cfg.teacher.backend == "hf":
        print("\n" + EMBEDDED_NOTE.split(" For real runs")[0])
    return 0


def exit_after_cancel(code: int) -> None:
    """Leave now after a cancelled run: stop every child process, then exit without waiting.

    The flow has recorded `cancelled` and stopped its sandbox workers; what is left are
    task threads still inside a request or a training step (a normal exit would wait for
    them) and child processes such as a temporary Prefect server.
    """
    from fdd_core.procs import stop_descendants

    sys.stdout.flush()
    sys.stderr.flush()
    stop_descendants(grace_s=3.0)
    os._exit(code)


def refuse_if_locked(run_dir: Path) -> None:
    """Fail at once, before Prefect starts, when a live run holds the folder (the flow itself
    takes the lock; this only saves the wait for the server)."""
    from fdd_core import runlock

    runlock.check(run_dir)


# --------------------------------------------------------------------------- inspect


def cmd_runs_list(args) -> int:
    from fdd_core.reports import list_runs, text_table

    runs = list_runs(args.root)
    if not runs:
        print(f"no runs under {Path(args.root).resolve()}")
        return 0
    rows = []
    for r in runs:
        last = r.get("rounds", [])[-1] if r.get("rounds") else {}
        ds = last.get("dataset", {}) if last else {}
        acc = {k: v.get("accuracy") for k, v in (last.get("metrics") or {}).items()}
        rows.append(
            {
                "run": Path(r.get("run_dir", "?")).name,
                "status": r.get("status", "?"),
                "updated": r.get("updated_at", ""),
                "rounds": f"{len(r.get('rounds', []))}/{(r.get('n_rounds') or 0) + 1}",
                "examples": ds.get("n_rows", ""),
                "dataset": (ds.get("version_id") or "")[:12],
                "accuracy": ", ".join(f"{k}={v:.3f}" for k, v in acc.items() if v is not None),
            }
        )
    print(text_table(rows), end="")
    return 0


def _find_dataset(root: Path, version: str):
    from fdd_core.store import find_version

    candidates = [root] if (root / "manifest.json").exists() else []
    candidates += sorted(p for p in root.glob("*/datasets") if p.is_dir())
    candidates += [root / "datasets"] if (root / "datasets").is_dir() else []
    matches, errors = [], []
    for folder in candidates:
        try:
            matches.append(find_version(folder, version))
        except (LookupError, ValueError, FileNotFoundError) as exc:
            errors.append(str(exc))
    unique = {m.version_id: m for m in matches}
    if not unique:
        raise ConfigError(f"no dataset version matching {version!r} under {root.resolve()}")
    if len(unique) > 1:
        raise ConfigError(
            f"{version!r} matches several versions: {', '.join(sorted(unique))}; give more digits"
        )
    return next(iter(unique.values()))


def cmd_data_show(args) -> int:
    from fdd_core.store import lineage, read_examples, read_manifest

    ref = _find_dataset(Path(args.root), args.version)
    manifest = read_manifest(ref)
    print(f"dataset version {ref.version_id}")
    print(f"  path:     {ref.path}")
    for key in (
        "round",
        "n_rows",
        "n_problems",
        "parent_version",
        "created_at",
        "config_hash",
        "code_version",
    ):
        if key in manifest:
            print(f"  {key + ':':<10}{manifest[key]}")
    print(f"  by origin: {json.dumps(manifest.get('counts_by_origin', {}), sort_keys=True)}")
    chain = lineage(Path(ref.path).parent, ref.version_id)
    print(
        "  lineage:  "
        + " <- ".join(
            f"{m['version_id'][:12]} (round {m.get('round')}, {m.get('n_rows')} rows)"
            for m in chain
        )
    )
    examples = read_examples(ref)[: args.n]
    for e in examples:
        print("\n" + "-" * 72)
        print(f"[{e.origin}, round {e.round}] {e.question}")
        print(f"answer: {e.answer:g}")
        print(e.program)
    return 0


def cmd_data_export(args) -> int:
    from fdd_core.dataset_card import export_version, push_to_hub

    ref = _find_dataset(Path(args.root), args.version)
    try:
        out = export_version(ref, args.out_dir, args.format)
    except (FileExistsError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    print(f"exported dataset version {ref.version_id} ({ref.n_rows} rows) as {args.format}")
    print(f"  to:   {out.resolve()}")
    if args.format == "hf":
        print(f'  load: datasets.load_from_disk("{out}")')
    else:
        print(f'  load: datasets.load_dataset("{out}")["train"]')
    if args.push_to_hub:
        try:
            url = push_to_hub(out, args.push_to_hub, args.format)
        except RuntimeError as exc:
            raise ConfigError(str(exc)) from None
        print(f"  pushed: {url}")
    return 0


def cmd_report(args) -> int:
    from fdd_core.report import write_run_report

    run_dir = Path(args.run_dir)
    try:
        paths = write_run_report(run_dir)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    print(f"report: {paths['html'].resolve()}")
    print(f"        {paths['markdown'].resolve()} (figures in {paths['figures'].resolve()})")
    return 0


def cmd_config_show(args) -> int:
    cfg = _load(args)
    print(dump_config(cfg), end="")
    return 0


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fdd",
        description="Feedback-Driven Distillation of math reasoning into small students.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run the FDD parent flow on a config")
    _add_config_args(p)
    p.add_argument(
        "--run-name",
        help="run folder name (default: derived from the config hash); may be a template "
        "with {date}, {time}, {datetime} (UTC) or {hash}, e.g. nightly-{date}",
    )
    p.add_argument(
        "--add-rounds",
        type=int,
        metavar="N",
        default=0,
        help="continue the latest run of this config (any run name) with N more rounds after "
        "its last finished one, instead of starting a run",
    )
    p.add_argument(
        "--skip-preflight",
        action="store_true",
        help="skip the data/model/endpoint checks done before any work",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("runs", help="inspect runs")
    runs_sub = p.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    q = runs_sub.add_parser("list", help="runs under the storage root")
    q.add_argument("--root", default="runs", help="storage root (default: runs)")
    q.set_defaults(func=cmd_runs_list)

    p = sub.add_parser("data", help="inspect dataset versions")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    q = data_sub.add_parser("show", help="a dataset version: counts, lineage, examples")
    q.add_argument("version", help="version id or a unique prefix")
    q.add_argument(
        "--root",
        default="runs",
        help="storage root, a run folder or a datasets folder (default: runs)",
    )
    q.add_argument("-n", type=int, default=3, help="examples to print (default 3)")
    q.set_defaults(func=cmd_data_show)
    q = data_sub.add_parser(
        "export", help="copy a dataset version (with its card) in a form `datasets` loads"
    )
    q.add_argument("version", help="version id or a unique prefix")
    q.add_argument("out_dir", help="new (or empty) folder to write")
    q.add_argument("--format", choices=["parquet", "jsonl", "hf"], default="parquet")
    q.add_argument(
        "--root",
        default="runs",
        help="storage root, a run folder or a datasets folder (default: runs)",
    )
    q.add_argument(
        "--push-to-hub",
        metavar="REPO",
        help="also upload to this Hugging Face dataset repo (token from HF_TOKEN; private)",
    )
    q.set_defaults(func=cmd_data_export)

    p = sub.add_parser("report", help="write a run's report (report.html, report.md, PNGs)")
    p.add_argument("run_dir", help="the run folder (holds run.json)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("config", help="show or check a config")
    cfg_sub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    q = cfg_sub.add_parser("show", help="print the resolved config (defaults filled in)")
    _add_config_args(q, required=False)
    q.set_defaults(func=cmd_config_show)

    for module in ("fdd.eval_cmd", "fdd.deploy_cmd", "fdd.sweep_cmd", "fdd.lab_cmd"):
        try:
            mod = __import__(module, fromlist=["add_parser"])
        except ImportError as exc:  # an optional command whose dependencies are missing
            print(f"warning: {module} unavailable: {exc}", file=sys.stderr)
            continue
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    # Prefect's temporary API server gets 20 s to start by default: a loaded 2-core machine
    # misses that and the run dies before any work ("Timed out while attempting to connect
    # to ephemeral Prefect API server"). A user's own setting wins.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"fdd: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from fdd_core.runlock import RunLockedError

        if not isinstance(exc, RunLockedError):
            raise
        print(f"fdd: error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(
            "fdd: interrupted; re-run the same command to continue from the last finished shard",
            file=sys.stderr,
        )
        if getattr(args, "func", None) is cmd_run:
            exit_after_cancel(130)
        return 130


if __name__ == "__main__":
    sys.exit(main())
