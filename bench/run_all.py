"""Run every benchmark in sequence (each compares against a baseline in the same run).

    python -m bench.run_all [--only NAME ...]

`--only rehearsal` runs the GSM8K-scale rehearsal (bench/bench_rehearsal.py), which the
default set leaves out because it takes about 35 minutes on 2 cores.

Results go to bench/results/<name>.json; copy the printed tables into docs/BENCHMARKS.md.
Run on an otherwise idle machine: ratios are stable, absolute numbers are not.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

BENCHES = [
    "sandbox",
    "filter",
    "request_cache",
    "hf_generate",
    "training",
    "trl",
    "teacher_engine",
]
# Long (about 35 minutes on 2 cores): only with --only rehearsal.
OPT_IN = ["rehearsal"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=BENCHES + OPT_IN, help="run only these")
    args = ap.parse_args(argv)
    failed = []
    for name in args.only or BENCHES:
        module = f"bench.bench_{name}"
        importlib.util.find_spec(module)  # fail early on a typo
        print(f"\n=== {module}", flush=True)
        rc = subprocess.call([sys.executable, "-m", module])
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
