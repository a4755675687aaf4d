"""FDD against its baselines in the lab world, at equal teacher budget, through `fdd sweep`.

    python -m bench.bench_lab_strategies [--seeds 0,1] [--strategies fdd,errors_only,uniform,none]
                                         [--config configs/lab.yaml] [--dry-run]

It starts the SIMULATED teacher (fdd_core/world/teacher.py, the lab's dials) on 127.0.0.1,
then runs

    fdd sweep CONFIG --set teacher.base_url=URL --set teacher.model=NAME \
        --vary synthesis.strategy=fdd,errors_only,uniform,none --seeds 0,1
    fdd compare <the sweep's runs>

so every strategy sees the same teacher, the same originals, the same test sets and the
same synthesis budget (synthesis.max_parents_per_round and n_complex/n_similar are fixed in
the config; only the choice of parents changes). Afterwards it adds the lab's truth-based
metrics (label precision, contamination recall) to every run of the sweep and writes
bench/results/lab_strategies.json.

The strategies and `fdd sweep` / `fdd compare` come with the experiments work (issue 12).
Where this checkout has no `fdd sweep`, the script says so and exits 2 without running
anything: docs/EVIDENCE.md records that the comparison is pending. `--dry-run` prints the
commands only. Budget: about 4 x 2 x (one `make lab`) of CPU time, ~90 min on 2 idle cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from fdd.lab_cmd import LAB_DIALS

RESULTS = Path(__file__).resolve().parent / "results" / "lab_strategies.json"


def _has_sweep() -> bool:
    from fdd.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return "sweep" in sub.choices and "compare" in sub.choices


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/lab.yaml")
    ap.add_argument("--strategies", default="fdd,errors_only,uniform,none")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--root", default="runs/lab-strategies", help="storage root of the sweep")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = ap.parse_args(argv)

    from fdd_core.world import World
    from fdd_core.world.lab import run_round_metrics
    from fdd_core.world.teacher import Dials, serve

    world = World()
    with serve(world, Dials(**LAB_DIALS), ledger=Path(args.root) / "simulated-teacher.jsonl") as s:
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
            "--vary",
            f"synthesis.strategy={args.strategies}",
            "--seeds",
            args.seeds,
        ]
        print("simulated teacher on", s.base_url, "(controlled experiment, not an LLM)")
        print("$", " ".join(sweep), flush=True)
        if args.dry_run:
            return 0
        if not _has_sweep():
            print(
                "this checkout has no `fdd sweep` / `fdd compare` yet (they come with the "
                "experiments work, issue 12): nothing was run",
                file=sys.stderr,
            )
            return 2
        env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false")
        rc = subprocess.call(sweep, env=env)
        if rc:
            return rc
    from fdd_core.reports import RoundResult

    runs = []
    for record_path in sorted(Path(args.root).glob("*/run.json")):
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
    compare = [
        sys.executable,
        "-m",
        "fdd.cli",
        "compare",
        *[str(Path(args.root) / r["run"]) for r in runs],
    ]
    print("$", " ".join(compare), flush=True)
    return subprocess.call(compare)


if __name__ == "__main__":
    raise SystemExit(main())
