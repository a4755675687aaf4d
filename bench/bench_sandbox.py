"""Benchmark of fdd_core.sandbox against one plain `python -c` subprocess per program.

    python -m bench.bench_sandbox [--n 1000] [--baseline-n 60] [--workers N] [--out PATH]

Programs are short, correct Program-of-Thought rationales (a few assignments, some import
math or fractions) with known answers; every answer is checked. The sandbox runs all `--n`
programs with every guarantee on (rlimits, scratch folder, clean environment, capped output,
and the namespaces `Sandbox.isolation` reports). The baseline runs `--baseline-n` of the same
programs, one `python -c` subprocess each, one after another (the usual way, and the figure
of ~28/s in docs/ENVIRONMENT.md), and again two at a time per core as a fairer parallel
reference. Besides wall-clock rates it reports CPU time per program (the caller plus every
worker and child, and each of the three apart), which moves less than wall time when the
machine is shared. `python -m bench.profile_sandbox` breaks that CPU down further.

Writes bench/results/sandbox.json (or `--out`) and prints a markdown table. Run on an idle
machine: ratios are stable, absolute numbers are not (the load average is recorded).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path

from fdd_core.config import SandboxConfig
from fdd_core.sandbox import Sandbox

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "sandbox.json"


def make_programs(n: int, seed: int = 0) -> list[tuple[str, float]]:
    """(program, expected answer) pairs in the style a teacher writes."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b, c, p = rng.randint(10, 99), rng.randint(1, 9), rng.randint(1, 9), rng.randint(2, 9)
        kind = i % 4
        if kind == 0:
            prog = (
                f"eggs_per_day = {a}\neaten = {b}\nbaked = {c}\nprice = {p}\n"
                "ans = (eggs_per_day - eaten - baked) * price"
            )
            want = (a - b - c) * p
        elif kind == 1:
            prog = f"import math\nside = {a}\narea = side * side\nans = math.sqrt(area) + {b}"
            want = a + b
        elif kind == 2:
            prog = (
                f"from fractions import Fraction\nshare = Fraction({b}, {b + c})\n"
                f"total = {a * (b + c)}\nans = total * share"
            )
            want = float(Fraction(b, b + c) * a * (b + c))
        else:
            prog = (
                f"prices = [{a}, {b}, {c}, {p}]\ntotal = 0\nfor x in prices:\n"
                "    total += x\nans = total / len(prices)"
            )
            want = (a + b + c + p) / 4
        out.append((prog, float(want)))
    return out


def _cpu_self_and_children() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _proc_cpu(pid: int) -> tuple[float, float]:
    """CPU of a process itself and of its reaped children, from /proc (0.0 if unknown)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def _cpu_split(procs: list[int]) -> tuple[float, float, float]:
    """(this process, the workers, their children): the workers' `unshare` parents idle."""
    t = os.times()
    own = [_proc_cpu(p) for p in procs]
    return t.user + t.system, sum(o for o, _ in own), sum(c for _, c in own)


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for path in glob.glob(f"/proc/{todo.pop()}/task/*/children"):
            try:
                kids = [int(x) for x in Path(path).read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def bench_sandbox(programs, workers: int | None) -> dict:
    cfg = SandboxConfig(max_workers=workers)
    start = time.perf_counter()
    sandbox = Sandbox(cfg)
    isolation = sandbox.isolation  # starts the workers
    startup_s = time.perf_counter() - start
    sandbox.run_many([p for p, _ in programs[:20]])  # warm-up
    procs = _descendants(os.getpid())
    cpu0 = _cpu_split(procs)
    start = time.perf_counter()
    results = sandbox.run_many([p for p, _ in programs])
    wall = time.perf_counter() - start
    cpu1 = _cpu_split(procs)
    sandbox.close()
    caller, workers, children = (
        (b - a) / len(programs) * 1000 for a, b in zip(cpu0, cpu1, strict=True)
    )
    wrong = [
        i
        for i, ((_, want), r) in enumerate(zip(programs, results, strict=True))
        if not (r.ok and r.answer == want)
    ]
    if wrong:
        raise SystemExit(
            f"sandbox gave wrong results for programs {wrong[:5]}: "
            f"{[results[i] for i in wrong[:2]]}"
        )
    return {
        "workers": sandbox.n_workers,
        "programs": len(programs),
        "seconds": wall,
        "programs_per_s": len(programs) / wall,
        "cpu_ms_per_program": caller + workers + children,
        "cpu_ms_per_program_caller": caller,
        "cpu_ms_per_program_workers": workers,
        "cpu_ms_per_program_children": children,
        "startup_s": startup_s,
        "isolation": asdict(isolation),
    }


def _run_plain(program: str) -> float:
    res = subprocess.run(
        [sys.executable, "-c", program + "\nprint(repr(float(ans)))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return float(res.stdout)


def bench_baseline(programs, parallel: int) -> dict:
    cpu0 = _cpu_self_and_children()
    start = time.perf_counter()
    if parallel == 1:
        answers = [_run_plain(p) for p, _ in programs]
    else:
        with ThreadPoolExecutor(parallel) as pool:
            answers = list(pool.map(_run_plain, [p for p, _ in programs]))
    wall = time.perf_counter() - start
    cpu1 = _cpu_self_and_children()
    if answers != [want for _, want in programs]:
        raise SystemExit("baseline gave wrong results")
    return {
        "parallel": parallel,
        "programs": len(programs),
        "seconds": wall,
        "programs_per_s": len(programs) / wall,
        "cpu_ms_per_program": (cpu1 - cpu0) / len(programs) * 1000,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="programs for the sandbox")
    ap.add_argument("--baseline-n", type=int, default=60, help="programs for the baseline")
    ap.add_argument("--workers", type=int, default=None, help="sandbox workers (default: cores)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where the JSON result goes")
    args = ap.parse_args(argv)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    programs = make_programs(args.n)
    load_before = os.getloadavg()
    base = bench_baseline(programs[: args.baseline_n], 1)
    sandbox = bench_sandbox(programs, args.workers)
    base_par = bench_baseline(programs[: args.baseline_n], cores)
    load_after = os.getloadavg()

    ratio = sandbox["programs_per_s"] / base["programs_per_s"]
    ratio_par = sandbox["programs_per_s"] / base_par["programs_per_s"]
    cpu_ratio = base["cpu_ms_per_program"] / max(sandbox["cpu_ms_per_program"], 1e-9)
    result = {
        "machine": {
            "cores": cores,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        },
        "sandbox": sandbox,
        "baseline_serial": base,
        "baseline_parallel": base_par,
        "speedup_vs_serial": ratio,
        "speedup_vs_parallel": ratio_par,
        "cpu_per_program_ratio": cpu_ratio,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    iso = sandbox["isolation"]
    print(
        f"\nSandbox throughput ({cores} cores, load average {load_before[0]:.1f} -> "
        f"{load_after[0]:.1f}; isolation: {iso['launcher']}, network cut "
        f"{iso['network_isolated']}, pid namespace {iso['pid_namespace']}, read-only fs "
        f"{iso['readonly_fs']}, child runs as {iso['privilege']})\n"
    )
    print("| method | programs | programs/s | CPU ms/program | speed-up |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| `python -c` per program, serial (baseline) | {base['programs']} | "
        f"{base['programs_per_s']:.1f} | {base['cpu_ms_per_program']:.1f} | 1.0x |"
    )
    print(
        f"| `python -c` per program, {cores} at a time | {base_par['programs']} | "
        f"{base_par['programs_per_s']:.1f} | {base_par['cpu_ms_per_program']:.1f} | "
        f"{base_par['programs_per_s'] / base['programs_per_s']:.1f}x |"
    )
    print(
        f"| Sandbox, {sandbox['workers']} warm workers (fork per program) | "
        f"{sandbox['programs']} | {sandbox['programs_per_s']:.0f} | "
        f"{sandbox['cpu_ms_per_program']:.2f} | **{ratio:.1f}x** |"
    )
    print(
        f"\nvs. the parallel baseline: {ratio_par:.1f}x; CPU per program: {cpu_ratio:.1f}x "
        f"less (caller {sandbox['cpu_ms_per_program_caller']:.2f} ms, workers "
        f"{sandbox['cpu_ms_per_program_workers']:.2f} ms, programs' processes "
        f"{sandbox['cpu_ms_per_program_children']:.2f} ms); worker start-up "
        f"{sandbox['startup_s']:.2f} s (once). Wrote {args.out}"
    )
    return result


if __name__ == "__main__":
    main()
