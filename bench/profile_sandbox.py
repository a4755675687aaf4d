"""Where a sandboxed program's CPU goes: caller, worker and child, by kind of work.

    python -m bench.profile_sandbox [--n 3000] [--workers N] [--no-perf]

Runs `--n` of bench_sandbox's programs through `Sandbox.run_many` and reports CPU and
minor page faults per program for each role, from /proc (always available): the caller
process, the worker processes themselves, and their reaped children (the programs). With
`perf` installed (and allowed), it runs again under ``perf record -e cpu-clock -g`` and
sorts every sample by role and kind: fork (the clone system call), page faults
(copy-on-write or other), other system calls (named), process exit, and user space (Python
itself). The machine's load is printed: on a shared machine the absolute figures move, the
shares much less.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_sandbox import make_programs
from fdd_core.config import SandboxConfig
from fdd_core.sandbox import Sandbox


def _stat(pid: int) -> tuple[float, float, float, float, int, int]:
    """utime, stime, cutime, cstime of a process, in seconds, then its minor page faults
    and those of its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (*(int(x) / tick for x in fields[11:15]), int(fields[7]), int(fields[8]))


def _worker_pids() -> list[int]:
    """The worker processes (not their `unshare`, nor a program's process, which has the
    same command line) among this process's descendants."""
    found, todo = [], [os.getpid()]
    while todo:
        parent = todo.pop()
        if parent in found:
            continue  # below a worker: programs' processes, not workers
        for path in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(x) for x in path.read_text().split()]
            except OSError:
                continue
            todo += kids
            for kid in kids:
                try:
                    argv = Path(f"/proc/{kid}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if any(a.endswith(b"sandbox_worker.py") for a in argv) and not argv[0].endswith(
                    b"unshare"
                ):
                    found.append(kid)
    return found


def measure(n: int, workers: int | None) -> dict:
    """CPU per program by role (microseconds), from /proc."""
    programs = [p for p, _ in make_programs(n)]
    others = set(_worker_pids())  # another sandbox's workers in this process are not ours
    with Sandbox(SandboxConfig(max_workers=workers)) as sandbox:
        sandbox.run_many(programs[:20])  # warm-up
        pids = [p for p in _worker_pids() if p not in others]
        t0, w0 = os.times(), [_stat(p) for p in pids]
        start = time.perf_counter()
        results = sandbox.run_many(programs)
        wall = time.perf_counter() - start
        t1, w1 = os.times(), [_stat(p) for p in pids]
    if not all(r.ok for r in results):
        raise SystemExit("some programs failed: the profile would not be of the normal path")

    def delta(k: int) -> float:
        return sum(b[k] - a[k] for a, b in zip(w0, w1, strict=True)) / n * 1e6

    caller = (t1.user + t1.system - t0.user - t0.system) / n * 1e6
    faults = {"worker": delta(4) / 1e6, "child": delta(5) / 1e6}
    return {
        "programs": n,
        "workers": len(pids),
        "programs_per_s": n / wall,
        "caller_pid": os.getpid(),
        "worker_pids": pids,
        "us_per_program": {
            "caller": caller,
            "worker user": delta(0),
            "worker system": delta(1),
            "child user": delta(2),
            "child system": delta(3),
            "total": caller + sum(delta(k) for k in range(4)),
        },
        "minor_faults_per_program": faults,
    }


def _classify(stack: list[str], in_kernel: bool) -> tuple[str, str | None]:
    """Kind of work of one sample (innermost frame first) and the system call, if any."""
    if any("copy_process" in s or s.endswith("_Fork") for s in stack):
        return "fork (clone)", None
    if any("exc_page_fault" in s for s in stack):
        cow = any(s in ("do_wp_page", "wp_page_copy") for s in stack)
        return ("page fault, copy-on-write" if cow else "page fault, other"), None
    if any(s in ("do_exit", "do_group_exit") for s in stack):
        return "process exit", None
    for s in stack:
        for prefix in ("__x64_sys_", "__do_sys_", "__se_sys_", "__arm64_sys_"):
            if s.startswith(prefix):
                return "system calls", s[len(prefix) :]
    if in_kernel:
        return "kernel, other", None
    return "user space", None


def perf_profile(data: Path, caller: int, workers: list[int]) -> dict:
    """Shares of all samples by role and kind, from a `perf record -g` file."""
    script = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "pid,ip,sym,dso"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kinds: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    pid, stack, in_kernel = None, [], False

    def flush() -> None:
        if pid is None or not stack:
            return
        role = "caller" if pid == caller else "worker" if pid in workers else "child"
        kind, call = _classify(stack, in_kernel)
        kinds[(role, kind)] += 1
        if call:
            calls[(role, call)] += 1

    for line in script.splitlines():
        if not line.strip():
            flush()
            pid, stack = None, []
        elif not line.startswith("\t"):  # a sample's header: its pid
            flush()
            pid, stack = int(line.split()[0]), []
        else:  # one frame of its call chain, innermost first: "ip symbol (dso)"
            parts = line.split()
            if len(parts) >= 2:
                kernel = "kernel" in parts[-1]
                if not stack:
                    in_kernel = kernel
                stack.append(parts[1])
    flush()
    total = sum(kinds.values()) or 1
    return {
        "samples": total,
        "share": {f"{r}: {k}": v / total for (r, k), v in sorted(kinds.items())},
        "system_calls": {f"{r}: {c}": v / total for (r, c), v in calls.most_common(15)},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--no-perf", action="store_true", help="only the /proc figures")
    ap.add_argument("--inner", type=Path, help=argparse.SUPPRESS)  # run under perf
    args = ap.parse_args(argv)
    if args.inner:
        args.inner.write_text(json.dumps(measure(args.n, args.workers)))
        return 0
    load = os.getloadavg()
    split = measure(args.n, args.workers)
    print(f"load average {load[0]:.1f}; {split['programs_per_s']:.0f} programs/s")
    print("\n| role | CPU µs/program |\n|---|---:|")
    for role, us in split["us_per_program"].items():
        print(f"| {role} | {us:.0f} |")
    faults = split["minor_faults_per_program"]
    print(f"\nminor page faults per program: worker {faults['worker']:.0f}", end="")
    print(f", child {faults['child']:.0f}")
    if args.no_perf or not shutil.which("perf"):
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        data, inner = Path(tmp) / "perf.data", Path(tmp) / "inner.json"
        cmd = [*("perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-g", "-o")]
        cmd += [str(data), "--", sys.executable, "-m", "bench.profile_sandbox"]
        cmd += ["--n", str(args.n), "--inner", str(inner)]
        if args.workers:
            cmd += ["--workers", str(args.workers)]
        if subprocess.run(cmd, capture_output=True).returncode != 0 or not inner.exists():
            print("\n(perf record failed here: no sample profile)")
            return 0
        info = json.loads(inner.read_text())
        prof = perf_profile(data, info["caller_pid"], info["worker_pids"])
    print(f"\nperf samples: {prof['samples']} (cpu-clock, every role together = 100%)\n")
    print("| role: kind of work | share of CPU |\n|---|---:|")
    for key, share in prof["share"].items():
        print(f"| {key} | {share * 100:.1f}% |")
    print("\n| role: system call (besides fork) | share of CPU |\n|---|---:|")
    for key, share in prof["system_calls"].items():
        print(f"| {key} | {share * 100:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
