"""FDD against its baselines in the lab world, at equal teacher budget, through `fdd sweep`.

    python -m bench.bench_lab_strategies [--seeds 0,1] [--strategies fdd,errors_only,uniform,none]
                                         [--config configs/lab.yaml] [--set KEY=VALUE ...]
                                         [--root runs/lab-strategies] [--dry-run]

It starts the SIMULATED teacher (fdd_core/world/teacher.py, the lab's dials) on 127.0.0.1,
then runs

    fdd sweep CONFIG --set teacher.base_url=URL --set teacher.model=NAME \
        --vary synthesis.strategy=fdd,errors_only,uniform,none --seeds 0,1 --out ROOT/exp
    fdd compare ROOT/exp

so every strategy sees the same teacher, the same originals, the same test sets and the
same synthesis budget (synthesis.max_parents_per_round and n_complex/n_similar are fixed in
the config; only the choice of parents changes). Afterwards it adds the lab's truth-based
metrics (label precision, contamination recall) to every run of the sweep and writes
bench/results/lab_strategies.json.

`--set` overrides go to every variant (e.g. a tiny student for a quick check of the
wiring: its numbers say nothing about distillation). `--dry-run` prints the commands only.
The experiment has a request cache of its own (ROOT/cache), so every teacher request of
it reaches this teacher and is counted. Budget with the real student: the variants share
round 0 per seed; run it with OMP_NUM_THREADS=1 (two trainings run side by side on 2
cores; docs/experiments.md). Measured times are in docs/EVIDENCE.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from fdd.lab_cmd import LAB_DIALS

RESULTS = Path(__file__).resolve().parent / "results" / "lab_strategies.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/lab.yaml")
    ap.add_argument("--strategies", default="fdd,errors_only,uniform,none")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--root", default="runs/lab-strategies", help="storage root of the sweep")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="for every variant"
    )
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = ap.parse_args(argv)

    from fdd_core.world import World
    from fdd_core.world.lab import run_round_metrics
    from fdd_core.world.teacher import Dials, serve

    world = World()
    exp_dir = Path(args.root) / "exp"
    ledger = Path(args.root) / "simulated-teacher.jsonl"
    world.load_ledger(ledger)  # a resumed experiment: the problems its cache already holds
    with serve(world, Dials(**LAB_DIALS), ledger=ledger) as s:
        sweep = [
            sys.executable,
            "-m",
            "fdd.cli",
            "sweep",
            args.config,
            "--set",
            f"teacher.base_url={s.base_url}",
            "--set",
            f"teacher.model={s.teacher.model_name}",
            "--set",
            f"storage.root={args.root}",
            # A request cache of the experiment's own: answers cached by an earlier run
            # (`make lab`, another sweep) would never reach this teacher, whose ledger
            # would then not know the problems (label precision "unknown") and whose
            # request counts would be too low.
            "--set",
            f"storage.cache_dir={Path(args.root) / 'cache'}",
            *[x for kv in args.set for x in ("--set", kv)],
            "--vary",
            f"synthesis.strategy={args.strategies}",
            "--seeds",
            args.seeds,
            "--out",
            str(exp_dir),
        ]
        print("simulated teacher on", s.base_url, "(controlled experiment, not an LLM)")
        print("$", " ".join(sweep), flush=True)
        if args.dry_run:
            return 0
        env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false")
        rc = subprocess.call(sweep, env=env)
        if rc:
            return rc
    from fdd_core.reports import RoundResult

    runs = []
    for record_path in sorted(exp_dir.glob("*/run.json")):
        record = json.loads(record_path.read_text())
        rounds = []
        for r in record.get("rounds", []):
            rr = RoundResult.model_validate(r)
            rr = rr.model_copy(
                update={
                    "lab_metrics": run_round_metrics(
                        world, record_path.parent, rr.round, rr.dataset
                    )
                }
            )
            rounds.append(rr.model_dump(mode="json"))
        runs.append({"run": record_path.parent.name, "config": record["config"], "rounds": rounds})
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"runs": runs}, indent=1))
    table = summarize(runs)
    RESULTS.with_suffix(".md").write_text(table)
    print(table)
    print("wrote", RESULTS, "and", RESULTS.with_suffix(".md"))
    compare = [sys.executable, "-m", "fdd.cli", "compare", str(exp_dir)]
    print("$", " ".join(compare), flush=True)
    return subprocess.call(compare)


STRATEGY_ORDER = ("fdd", "errors_only", "uniform", "none")


def _mean_sd(xs: list[float]) -> str:
    if not xs:
        return ""
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def _pooled(num: float, den: float) -> str:
    return f"{num / den:.2f} ({num:g}/{den:g})" if den else ""


def summarize(runs: list[dict]) -> str:
    """Per strategy and round, over seeds: accuracy (mean ± sample sd), dataset growth by
    origin, the lab's truth-based metrics pooled over seeds (k/n), teacher requests sent
    and asked (sent plus answers found in the experiment's request cache, which a variant
    can share with another of its seed that asked the same prompt first) and wall time
    (means per run). Round 0 is shared by the variants of a seed."""
    rows: dict[tuple[str, int], list[dict]] = {}
    for run in runs:
        strategy = run["config"]["synthesis"]["strategy"]
        for r in run["rounds"]:
            rows.setdefault((strategy, r["round"]), []).append(r)

    def order(key: tuple[str, int]) -> tuple[int, str, int]:
        s, r = key
        return (STRATEGY_ORDER.index(s) if s in STRATEGY_ORDER else 99, s, r)

    out = [
        "| strategy | round | seeds | lab_test | lab_hard | examples (orig/complex/similar) "
        "| label precision | contamination recall | teacher requests sent (asked) | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in sorted(rows, key=order):
        strategy, rnd = key
        group = rows[key]

        def acc(name: str, group=group) -> list[float]:
            return [g["metrics"][name]["accuracy"] for g in group if name in g["metrics"]]

        def mean_of(values: list[float]) -> float:
            return statistics.mean(values) if values else 0.0

        origin = [
            mean_of([g.get("counts_by_origin", {}).get(o, 0) for g in group])
            for o in ("original", "complex", "similar")
        ]
        lab = [g.get("lab_metrics") or {} for g in group]

        def total(name: str, lab=lab) -> float:
            return sum(x.get(name, 0) for x in lab)

        def usage(key: str, group=group) -> float:
            return mean_of(
                [sum(u.get(key, 0) for u in g.get("teacher_usage", {}).values()) for g in group]
            )

        requests = usage("requests")
        asked = requests + usage("cache_hits")  # a variant may hit another's cached answers
        wall = mean_of([sum((g.get("wall_time_s") or {}).values()) for g in group])
        out.append(
            f"| {strategy} | {rnd} | {len(group)} | {_mean_sd(acc('lab_test'))} "
            f"| {_mean_sd(acc('lab_hard'))} "
            f"| {mean_of([g['dataset']['n_rows'] for g in group]):.1f} "
            f"({origin[0]:.1f}/{origin[1]:.1f}/{origin[2]:.1f}) "
            f"| {_pooled(total('labels_correct'), total('labels_accepted'))} "
            f"| {_pooled(total('paraphrases_caught'), total('paraphrases_planted'))} "
            f"| {requests:.1f} ({asked:.1f}) "
            # round 0 is computed once per seed, outside the variants, which find it cached
            + ("| shared |" if rnd == 0 and wall < 1.0 else f"| {wall:.0f} |")
        )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
