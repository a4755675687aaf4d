"""Training in a child process: same student as inline, timeouts and Ctrl-C stop the whole
process tree for real, failures say how the child ended, torchrun for several processes."""

from __future__ import annotations

import _thread
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from fdd_core.config import TrainingConfig
from fdd_core.procs import descendants

torch = pytest.importorskip("torch")

from fdd_core.store import write_version  # noqa: E402
from fdd_core.training import launch, train_student  # noqa: E402
from fdd_core.training.launch import (  # noqa: E402
    TrainingProcessError,
    TrainingTimeoutError,
    train_in_child,
)
from tests.test_training import make_examples  # noqa: E402

CFG = {
    "method": "full",
    "max_steps": 2,
    "batch_size": 4,
    "warmup_ratio": 0.0,
    "learning_rate": 1e-3,
}


def _dataset(tmp_path, n=8):
    return write_version(
        tmp_path / "datasets",
        make_examples(n),
        parent=None,
        round=0,
        config_hash="test",
        code_version="test",
    )


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# A stand-in for a training step that never returns: a child that starts a grandchild (as
# torchrun starts its ranks), says both pids, then sleeps. Only the launch is under test.
_HANG = (
    "import subprocess, sys, time\n"
    "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "print('PIDS', __import__('os').getpid(), g.pid, flush=True)\n"
    "time.sleep(600)\n"
)


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _logger():
    logger = logging.getLogger(f"test-launch-{time.monotonic_ns()}")
    handler = _Lines()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, handler


def _pids(lines: list[str]) -> list[int]:
    for line in lines:
        if line.startswith("[train] PIDS "):
            return [int(x) for x in line.split()[2:]]
    return []


def test_child_trains_the_same_student_as_inline_and_streams_its_progress(
    tmp_path, tiny_causal_dir
):
    from safetensors.torch import load_file

    ref = _dataset(tmp_path)
    cfg = TrainingConfig(**CFG)
    logger, lines = _logger()
    child = train_in_child(
        ref, str(tiny_causal_dir), cfg, tmp_path / "child", device="cpu", logger=logger
    )
    train_student(make_examples(8), str(tiny_causal_dir), cfg, tmp_path / "inline", device="cpu")
    assert Path(child.path) == tmp_path / "child"
    a = load_file(tmp_path / "child" / "model.safetensors")
    b = load_file(tmp_path / "inline" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    meta = json.loads((tmp_path / "child" / "meta.json").read_text())
    assert meta["final_loss"] == pytest.approx(
        json.loads((tmp_path / "inline" / "meta.json").read_text())["final_loss"], rel=1e-5
    )
    assert any(line.startswith("[train] ") and "step 2/2" in line for line in lines.lines)
    assert not list(tmp_path.glob(".child.job.json"))  # the job file is gone once done


def test_timeout_stops_the_whole_child_tree(tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "worker_command", lambda job, n: [sys.executable, "-c", _HANG])
    logger, lines = _logger()
    cfg = TrainingConfig(**CFG, timeout_s=3)
    started = time.monotonic()
    with pytest.raises(TrainingTimeoutError, match=r"ran past training.timeout_s=3 s") as err:
        train_in_child(_dataset(tmp_path), "unused", cfg, tmp_path / "s", logger=logger)
    assert isinstance(err.value, TimeoutError)
    assert time.monotonic() - started < 30
    pids = _pids(lines.lines)
    assert len(pids) == 2, lines.lines
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids), "a training process outlived its timeout"
    assert "PIDS" in str(err.value)  # the child's last lines are in the message


def test_ctrl_c_stops_the_child_and_goes_on(tmp_path, monkeypatch, request):
    monkeypatch.setattr(launch, "worker_command", lambda job, n: [sys.executable, "-c", _HANG])
    # interrupt_main only calls the SIGINT handler Python has: if a shell started us with
    # SIGINT ignored, or an earlier test (a Ray driver) left another handler, nothing is
    # raised (this test once hung in CI for good). Use Python's own handler, and a timeout
    # so that a lost interrupt fails the test instead of hanging it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    logger, lines = _logger()

    def interrupt_when_started():
        deadline = time.monotonic() + 60
        while not _pids(lines.lines) and time.monotonic() < deadline:
            time.sleep(0.05)
        _thread.interrupt_main()  # what Ctrl-C does to the main thread

    threading.Thread(target=interrupt_when_started, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        train_in_child(_dataset(tmp_path), "unused", TrainingConfig(**CFG, timeout_s=120),
                       tmp_path / "s", logger=logger)  # fmt: skip
    pids = _pids(lines.lines)
    assert len(pids) == 2
    assert not any(_alive(p) for p in pids), "the training outlived the interrupted task"
    assert not [p for p in descendants() if p in pids]
    assert any("stopping the training" in m for m in lines.lines)


def test_a_failing_child_says_how_it_ended_and_shows_its_last_lines(tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(TrainingProcessError, match=r"exited with code 1") as err:
        train_in_child(_dataset(tmp_path), missing, TrainingConfig(**CFG), tmp_path / "s",
                       device="cpu")  # fmt: skip
    assert "no-such-model" in str(err.value)  # the worker's own error, from its output
    assert not (tmp_path / "s").exists()


def test_killed_child_is_reported_with_its_signal(tmp_path, monkeypatch):
    code = "import os, signal; print('about to die', flush=True); os.kill(os.getpid(), 9)"
    monkeypatch.setattr(launch, "worker_command", lambda job, n: [sys.executable, "-c", code])
    with pytest.raises(TrainingProcessError, match=r"killed by SIGKILL \(-9\) \(out of memory"):
        train_in_child(_dataset(tmp_path), "unused", TrainingConfig(**CFG), tmp_path / "s")


def test_processes_auto_is_one_on_cpu_and_a_number_is_taken_as_given():
    assert launch.n_processes(TrainingConfig(), "cpu") == 1
    assert launch.n_processes(TrainingConfig(processes=3), "cpu") == 3
    cmd = launch.worker_command(Path("job.json"), 2)
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    assert cmd[-3:] == ["-m", "fdd_core.training.worker", "job.json"]
    with pytest.raises(ValueError, match="auto"):
        TrainingConfig(processes=0)


@pytest.mark.slow
def test_two_processes_under_torchrun_train_like_gradient_accumulation(
    tmp_path, tiny_causal_dir, monkeypatch
):
    """processes=2 on CPU: torchrun, gloo DDP; equal to one process accumulating 2 batches."""
    from safetensors.torch import load_file

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same float reductions in every process

    ref = _dataset(tmp_path, 16)
    base = {**CFG, "group_by_length": False}
    ddp = train_in_child(ref, str(tiny_causal_dir), TrainingConfig(**base, processes=2),
                         tmp_path / "ddp", device="cpu")  # fmt: skip
    one = train_in_child(ref, str(tiny_causal_dir), TrainingConfig(**base, grad_accum=2),
                         tmp_path / "one", device="cpu")  # fmt: skip
    meta_ddp = json.loads((Path(ddp.path) / "meta.json").read_text())
    meta_one = json.loads((Path(one.path) / "meta.json").read_text())
    assert meta_ddp["num_processes"] == 2 and meta_one["num_processes"] == 1
    assert meta_ddp["tokens_seen"] == meta_one["tokens_seen"]
    a = load_file(Path(ddp.path) / "model.safetensors")
    b = load_file(Path(one.path) / "model.safetensors")
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, f"largest weight difference {worst}"
    assert os.environ.get("RANK") is None  # nothing of torchrun leaked into this process
