"""`fdd sweep` and `fdd compare`: experiments over variants of one config, and their tables.

    fdd sweep CONFIG --vary synthesis.strategy=fdd,errors_only,uniform,none --seeds 0,1
    fdd sweep CONFIG --vary teacher.n_samples=1,4 --max-parallel 2 --name paths
    fdd sweep CONFIG --vary synthesis.strategy=fdd,none --deployment fdd-distill/fdd-process
    fdd compare runs/paths                     # an experiment folder, or run folders

A sweep's variants are the cross product of the --vary values, times the seeds (a seed s
sets teacher.seed and training.seed to s). The experiment folder (--out, default
<storage.root>/<--name or exp-HASH>) holds experiment.json and one run folder per variant;
running the same command again runs only the variants that are missing or failed.
See docs/experiments.md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fdd_core.config import ConfigError


def add_parser(subparsers) -> None:
    """Add `sweep` and `compare` to the `fdd` command's subparsers."""
    p = subparsers.add_parser(
        "sweep",
        help="run variants of a config as one experiment (fdd-sweep flow)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="base run config (YAML)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of every variant (repeatable)",
    )
    p.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a dimension of the sweep (repeatable; the variants are the cross product). "
        "Values are YAML; commas inside [] or {} do not split.",
    )
    p.add_argument(
        "--seeds",
        help="comma-separated seeds; seed s sets teacher.seed=s and training.seed=s "
        "(default: the config's seeds, one run per variant)",
    )
    p.add_argument("--name", help="experiment name (default: exp-<hash of the definition>)")
    p.add_argument("--out", help="experiment folder (default: <storage.root>/<name>)")
    p.add_argument(
        "--max-parallel",
        type=int,
        default=2,
        help="variants running at once (default 2); each holds its own student",
    )
    p.add_argument(
        "--deployment",
        help="run each variant as a run of this deployment (e.g. fdd-distill/fdd-process) "
        "on a Prefect server instead of as a local subflow",
    )
    p.set_defaults(func=cmd_sweep)

    q = subparsers.add_parser(
        "compare",
        help="compare runs and experiments: accuracy per round, data, teacher cost, plots",
    )
    q.add_argument("paths", nargs="+", metavar="RUN_OR_EXPERIMENT", help="folders to compare")
    q.add_argument(
        "--out",
        help="where compare.md, compare.json and the PNGs go (default: <experiment>/compare "
        "for one experiment, else ./compare)",
    )
    q.set_defaults(func=cmd_compare)


def _spec_from_args(args):
    from fdd_core.experiments import SweepSpec, load_base, parse_seeds, parse_vary

    if args.max_parallel < 1:
        raise ConfigError(f"--max-parallel must be at least 1, got {args.max_parallel}")
    return SweepSpec(
        config=str(Path(args.config).resolve()),
        base=load_base(args.config),
        overrides=list(args.overrides),
        vary=parse_vary(args.vary),
        seeds=parse_seeds(args.seeds),
        max_parallel=args.max_parallel,
        deployment=args.deployment,
    )


def experiment_location(spec, name: str | None, out: str | None) -> tuple[str, Path]:
    """(name, folder) of the experiment a sweep definition runs in."""
    from fdd_core.config import config_from_dict

    base = config_from_dict(spec.base, spec.overrides, source=spec.config or "<defaults>")
    name = name or f"exp-{spec.digest()}"
    folder = Path(out) if out else Path(base.storage.root).expanduser() / name
    return name, folder.resolve()


def cmd_sweep(args) -> int:
    from fdd_core.experiments import expand, variant_config

    spec = _spec_from_args(args)
    name, folder = experiment_location(spec, args.name, args.out)
    variants = expand(spec)
    print(f"experiment {name}: {len(variants)} variant(s) in {folder}", flush=True)
    for v in variants:
        try:
            variant_config(spec, v, folder)
            note = ""
        except ConfigError as exc:
            note = "  <- invalid config, will be recorded as failed: " + str(exc).splitlines()[-1]
        print(f"  {v.name}{note}", flush=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from fdd_core.compare import compare
    from flows.sweep import run_sweep

    exp = run_sweep(spec, folder, name)
    print()
    print(compare([folder]).text())
    failed = [v for v in exp.variants if v.status != "completed"]
    print(f"experiment {exp.status}: {len(exp.variants) - len(failed)}/{len(exp.variants)} done")
    for v in failed:
        print(f"  {v.name}: {v.status}: {(v.error or '').splitlines()[-1] if v.error else ''}")
    print(f"comparison: {folder / 'compare' / 'compare.md'}")
    if failed:
        print("re-run the same command to run only the missing or failed variants")
    return 0 if not failed else 1


def cmd_compare(args) -> int:
    from fdd_core.compare import compare, write_comparison
    from fdd_core.experiments import EXPERIMENT_FILE

    try:
        comparison = compare(args.paths)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    if args.out:
        out = Path(args.out)
    elif len(args.paths) == 1 and (Path(args.paths[0]) / EXPERIMENT_FILE).is_file():
        out = Path(args.paths[0]) / "compare"
    else:
        out = Path("compare")
    written = write_comparison(comparison, out)
    print(comparison.text())
    print(f"wrote {written['markdown']}, {written['json']}")
    for png in written["plots"]:
        print(f"wrote {png}")
    return 0
