"""`fdd` with a SIGKILL at one exact point: test-side fault injection, no hook in the product.

    python -m tests.chaos_inject POINT run CONFIG ...

wraps one filesystem call of the real code path (the rename that publishes a dataset
version, the write of a checkpoint's completion marker, ...) so that the process kills
itself with SIGKILL right there, exactly as a node failure would stop it: no `finally`, no
`atexit`, no flush. Everything else is the real `fdd` command. Points:

- version-rename-r0: round 0's dataset version is complete in its temporary folder, not
  yet renamed into place;
- version-files-r1: round 1's version has its examples file written but no manifest;
- checkpoint-rename-r0: round 0's student is complete in its temporary folder, not yet
  renamed into place;
- checkpoint-weights-r1: round 1's student has its weights written but no meta.json;
- run-json-r0: run.json's rewrite after round 0 is written to its temporary file, not yet
  renamed over the old one.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

POINTS = (
    "version-rename-r0",
    "version-files-r1",
    "checkpoint-rename-r0",
    "checkpoint-weights-r1",
    "run-json-r0",
)


# Set in a training child started through this module: the run it belongs to dies with it.
_RUN_PID: int | None = None


def _die(point: str) -> None:
    message = f"chaos_inject: SIGKILL at {point}\n"
    sys.stdout.write(message)
    sys.stdout.flush()
    if _RUN_PID is not None:  # a node failure takes the `fdd` process down with its child
        # Our stdout is a pipe to the run, which dies first: say it on the run's own stdout.
        try:
            with open(f"/proc/{_RUN_PID}/fd/1", "a") as out:
                out.write(message)
        except OSError:
            pass
        os.kill(_RUN_PID, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str) -> None:
    from fdd_core import store
    from fdd_core.training import launch
    from fdd_core.training import student as training_student

    if point not in POINTS:
        raise SystemExit(f"unknown point {point!r}; one of {', '.join(POINTS)}")
    # Students train in a child process (training.isolation "process"): start it through
    # this module so that the same point is armed in there too.
    run_pid = os.getpid()
    launch.worker_command = lambda job, nproc: [
        sys.executable, "-m", "tests.chaos_inject", point, "--train-worker", str(run_pid), str(job)
    ]  # fmt: skip
    real_rename, real_replace = os.rename, os.replace
    calls = {"run.json": 0}

    def rename(src, dst, *args, **kwargs):
        s, d = Path(src), Path(dst)
        if (
            point == "version-rename-r0"
            and s.name.startswith(store._TMP_PREFIX)
            and d.parent.name == "datasets"
        ):
            _die(point)
        return real_rename(src, dst, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        d = Path(dst)
        if point == "checkpoint-rename-r0" and d.name == "student" and d.parent.name == "round-0":
            _die(point)
        if point == "run-json-r0" and d.name == "run.json":
            calls["run.json"] += 1
            if calls["run.json"] == 2:  # 1: "running" at the start; 2: after round 0
                _die(point)
        return real_replace(src, dst, *args, **kwargs)

    os.rename, os.replace = rename, replace

    if point == "version-files-r1":
        real_write = store._write_file

        def write_file(path, data):
            if Path(path).name == store.MANIFEST_FILE and b'"round": 1' in data:
                _die(point)
            return real_write(path, data)

        store._write_file = write_file

    if point == "checkpoint-weights-r1":
        real_json = training_student.atomic_write_json

        def write_json(path, obj, *args, **kwargs):
            p = Path(path)
            if p.name == training_student.META_FILE and "round-1" in str(p):
                _die(point)
            return real_json(path, obj, *args, **kwargs)

        training_student.atomic_write_json = write_json


def main(argv: list[str]) -> int:
    global _RUN_PID
    point, rest = argv[0], argv[1:]
    if rest[:1] == ["--train-worker"]:  # the training child of a run started by this module
        _RUN_PID = int(rest[1])
        install(point)
        from fdd_core.training.worker import main as worker_main

        return worker_main(rest[2:])
    install(point)
    from fdd.cli import main as fdd_main

    return fdd_main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
