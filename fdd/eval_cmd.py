"""`fdd eval`: score a model (trained student, checkpoint or model name) on benchmarks.

    fdd eval --model runs/r/round-1/student --benchmark embedded
    fdd eval --model smollm2-135m-instruct --benchmark gsm8k --data test.jsonl --limit 50
    fdd eval --model M --benchmark my_problems.jsonl          # any {question, answer} file

Results go to --out, else beside the model (`<model folder>/eval`), else, for a model that
is not a local folder such as the embedded one, to `<cache>/eval/<model name>` (cache:
$FDD_CACHE_DIR or ~/.cache/fdd). Each benchmark gets `<out>/<benchmark>/predictions.jsonl`
and `result.json`; `<out>/results.json` keeps the summary of every benchmark scored there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fdd_core.config import EMBEDDED_MODEL, ConfigError, RunConfig, load_config


def add_parser(subparsers) -> None:
    """Add the `eval` command to the `fdd` command's subparsers."""
    p = subparsers.add_parser(
        "eval",
        help="score a model on benchmarks (accuracy and failure breakdown)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        default=EMBEDDED_MODEL,
        help="trained student folder (full or LoRA), checkpoint folder or model "
        f"name (default: {EMBEDDED_MODEL})",
    )
    p.add_argument(
        "--benchmark",
        action="append",
        default=[],
        metavar="NAME",
        help="gsm8k, svamp, asdiv, multiarith, embedded, a .jsonl file or a .yaml "
        "spec (repeatable; default: embedded)",
    )
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="[NAME=]FILE",
        help="local data file for a benchmark; plain FILE applies to the only "
        "--benchmark given (repeatable)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="score only the first N problems of each benchmark",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="results folder (default: <model>/eval or <cache>/eval/<model>)",
    )
    p.add_argument(
        "--batch-size", type=int, default=None, metavar="N", help="prompts per generation batch"
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        metavar="N",
        help="new tokens per program (default: the benchmark's own budget)",
    )
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default=None,
        help="device for the in-process backend (default: auto)",
    )
    p.add_argument(
        "--config",
        default=None,
        metavar="CONFIG",
        help="run config supplying student, sandbox, evaluation and storage "
        "settings (flags above win)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (repeatable)",
    )
    p.set_defaults(func=run)


def _data_paths(args, benchmarks: list[str]) -> dict[str, str]:
    paths: dict[str, str] = {}
    for item in args.data:
        name, sep, file = item.partition("=")
        if not sep:
            if len(benchmarks) != 1:
                raise ConfigError(
                    f"--data {item}: with several benchmarks write NAME=FILE, e.g. "
                    f"--data gsm8k=data/gsm8k/test.jsonl"
                )
            name, file = benchmarks[0], item
        if not Path(file).expanduser().exists():
            raise ConfigError(f"--data {item}: file not found: {file}")
        paths[name] = file
    return paths


def _positive(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{flag} must be >= 1, got {value}")


def _build(args) -> tuple[RunConfig, list[str]]:
    cfg = load_config(args.config, args.overrides)
    for value, flag in (
        (args.limit, "--limit"),
        (args.batch_size, "--batch-size"),
        (args.max_tokens, "--max-tokens"),
    ):
        _positive(value, flag)
    benchmarks = args.benchmark or list(cfg.evaluation.benchmarks) or ["embedded"]
    ev = cfg.evaluation
    ev.data_paths = {**ev.data_paths, **_data_paths(args, benchmarks)}
    if args.limit is not None:
        ev.limit = args.limit
    if args.batch_size is not None:
        ev.batch_size = args.batch_size
        if "batch_size" in type(cfg.student).model_fields:  # backends that batch here
            cfg.student.batch_size = args.batch_size
    if args.device is not None and "device" in type(cfg.student).model_fields:
        cfg.student.device = args.device  # in-process backends only (not an endpoint)
    return cfg, benchmarks


def run(args) -> int:
    """Evaluate, print a table of the scores and where the results were written."""
    from fdd_core.benchmarks import load_spec
    from fdd_core.data import DataFileNotFoundError, DataFormatError, DataUnavailableError
    from fdd_core.evaluation import benchmark_model, default_eval_dir
    from fdd_core.models import ModelNotFoundError
    from fdd_core.reports import text_table

    cfg, benchmarks = _build(args)
    try:
        for name in benchmarks:
            load_spec(name)
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(str(exc)) from None
    out = Path(args.out) if args.out else default_eval_dir(args.model, cfg.storage.cache_dir)
    print(
        f"evaluating {args.model} on {', '.join(benchmarks)}"
        + (f" (first {cfg.evaluation.limit} problems each)" if cfg.evaluation.limit else ""),
        flush=True,
    )
    try:
        results = benchmark_model(
            args.model,
            benchmarks,
            eval_cfg=cfg.evaluation,
            sandbox_cfg=cfg.sandbox,
            student_cfg=cfg.student,
            out_dir=out,
            cache_dir=cfg.storage.cache_dir,
            max_tokens=args.max_tokens,
        )
    except (
        DataFileNotFoundError,
        DataFormatError,
        DataUnavailableError,
        ModelNotFoundError,
        FileNotFoundError,
    ) as exc:
        raise ConfigError(str(exc)) from None
    rows = [{"benchmark": name, **res.summary()} for name, res in results.items()]
    print()
    print(text_table(rows), end="")
    print()
    print(f"results: {out / 'results.json'}")
    for name, res in results.items():
        print(f"  {name}: {res.predictions_path}")
    return 0
