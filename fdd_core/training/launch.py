"""Training in a child process that the task starts, watches and stops.

`train_in_child` writes a job file beside the student folder and starts
`python -m fdd_core.training.worker JOB` (or `torchrun ... -m fdd_core.training.worker JOB`
for several processes) in a session of its own. It forwards every line the child prints to
the caller's logger (the task's log, so the Prefect UI shows the training progress), and:

- stops the whole process tree (SIGTERM, then SIGKILL) when `timeout_s` passes, and raises
  `TrainingTimeoutError` (a `TimeoutError`);
- stops it the same way when the caller is interrupted (Ctrl-C, Prefect cancelling the
  run), then lets the interruption go on;
- raises `TrainingProcessError` naming how the child ended (exit code or signal; out of
  memory called out) and the tail of its output when it fails.

The child's memory (the student, the optimizer, CUDA's caches) goes back to the system when it
ends, whatever happened in it. What it computes is exactly `train_student` in the caller's
process: same seeds, same weights (tested).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from fdd_core.config import TrainingConfig
from fdd_core.procs import describe_exit, stop_tree
from fdd_core.schemas import DatasetRef, ModelRef
from fdd_core.training.student import read_model_ref

log = logging.getLogger("fdd_core.training")

TAIL_LINES = 40
STOP_GRACE_S = 10.0


class TrainingProcessError(RuntimeError):
    """The training child process failed; the message says how and shows its last lines."""


class TrainingTimeoutError(TimeoutError):
    """The training ran past `training.timeout_s` and was stopped."""


def n_processes(cfg: TrainingConfig, device: str) -> int:
    """How many training processes to start: cfg.processes, or for 'auto' one per visible
    GPU when there are several (and the device may be CUDA), else one."""
    if cfg.processes != "auto":
        return int(cfg.processes)
    if device == "cpu":
        return 1
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no usable torch CUDA: one process
        count = 0
    return count if count > 1 else 1


def worker_command(job_path: Path, nproc: int) -> list[str]:
    """The child's command line: the worker module, under torchrun for several processes."""
    if nproc > 1:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(nproc),
            "-m",
            "fdd_core.training.worker",
            str(job_path),
        ]
    return [sys.executable, "-m", "fdd_core.training.worker", str(job_path)]


def _child_env(nproc: int) -> dict[str, str]:
    env = dict(os.environ)
    # The child imports this checkout's code even when it is not installed.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if nproc > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    return env


def write_job(
    job_path: Path,
    dataset: DatasetRef,
    base_model: str,
    cfg: TrainingConfig,
    out_dir: Path,
    *,
    dataset_version: str | None,
    device: str,
    cache_dir: str | None,
) -> None:
    """The job file the worker reads (written atomically)."""
    job = {
        "dataset": dataset.model_dump(mode="json"),
        "base_model": base_model,
        "training": cfg.model_dump(mode="json"),
        "out_dir": str(out_dir),
        "dataset_version": dataset_version,
        "device": device,
        "cache_dir": cache_dir,
    }
    job_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = job_path.with_name(job_path.name + ".tmp")
    tmp.write_text(json.dumps(job, indent=2) + "\n")
    os.replace(tmp, job_path)


def train_in_child(
    dataset: DatasetRef,
    base_model: str,
    cfg: TrainingConfig,
    out_dir: str | Path,
    *,
    dataset_version: str | None = None,
    device: str = "auto",
    cache_dir: str | None = None,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
) -> ModelRef:
    """`train_student` on the dataset's examples, in a child process; see the module doc."""
    logger = logger or log
    out_dir = Path(out_dir)
    job_path = out_dir.parent / f".{out_dir.name}.job.json"
    write_job(
        job_path,
        dataset,
        base_model,
        cfg,
        out_dir,
        dataset_version=dataset_version,
        device=device,
        cache_dir=cache_dir,
    )
    nproc = n_processes(cfg, device)
    cmd = worker_command(job_path, nproc)
    what = f"training of {out_dir}" + (f" ({nproc} processes)" if nproc > 1 else "")
    logger.info("starting the %s in a child process: %s", what, " ".join(cmd[1:]))
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
        env=_child_env(nproc),
        start_new_session=True,  # its own group: the terminal's Ctrl-C reaches us, we stop it
    )

    def forward() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            if line:
                logger.info("[train] %s", line)

    reader = threading.Thread(target=forward, name="train-child-output", daemon=True)
    reader.start()
    deadline = time.monotonic() + cfg.timeout_s if cfg.timeout_s else None
    try:
        while True:
            try:
                returncode = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() > deadline:
                    stopped = stop_tree(proc.pid, STOP_GRACE_S)
                    proc.wait()
                    reader.join(timeout=5)
                    raise TrainingTimeoutError(
                        f"the {what} ran past training.timeout_s={cfg.timeout_s:g} s and was "
                        f"stopped ({len(stopped)} process(es)); its last lines:\n" + "\n".join(tail)
                    ) from None
    except BaseException:
        if proc.poll() is None:  # interrupted (Ctrl-C, a cancelled run): stop the child too
            logger.warning("stopping the %s (pid %d): the task was interrupted", what, proc.pid)
            stop_tree(proc.pid, STOP_GRACE_S)
            proc.wait()
        raise
    finally:
        reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
    if returncode != 0:
        text = "\n".join(tail)
        oom = "out of memory" in text.lower() or returncode == -9
        hint = (
            " (out of memory? lower training.batch_size or max_seq_len, or raise grad_accum)"
            if oom
            else ""
        )
        raise TrainingProcessError(
            f"the {what} {describe_exit(returncode)}{hint}; its last lines:\n{text}"
        )
    job_path.unlink(missing_ok=True)
    return read_model_ref(out_dir)
