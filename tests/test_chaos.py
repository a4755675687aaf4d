"""Whole-run chaos tests: real `fdd run` processes, the scripted teacher server, a tiny student.

Each disturbed run is compared with an undisturbed run of the same config and seeds (dataset
version ids and every row), and the teacher's request log shows what was paid twice.
See docs/reliability.md for the guarantees these tests prove.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from fdd_core.config import RunConfig, dump_config
from tests.chaos import REPO, Teacher, fdd_cmd, fdd_env, start_fdd, versions, wait_for
from tests.servers.scripted_teacher import numbers_in, world_question

pytestmark = [pytest.mark.slow, pytest.mark.server]

N_TRAIN = 32
SHARD = 8
WORKERS = 2
LATENCY_S = 0.3  # per teacher request: long enough to kill the server with shards in flight


def make_world(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    train, test = folder / "train.jsonl", folder / "test.jsonl"
    with train.open("w") as fh:
        for i in range(N_TRAIN):
            q = world_question(f"train-{i}", 2 + i % 2)
            fh.write(json.dumps({"question": q, "answer": sum(numbers_in(q))}) + "\n")
    with test.open("w") as fh:
        for i in range(4):
            q = world_question(f"test-{i}", 2)
            fh.write(json.dumps({"question": q, "answer": sum(numbers_in(q))}) + "\n")
    return train, test


def chaos_config(world, teacher_url: str, student_dir: Path, root: Path, run_name: str) -> dict:
    train, test = world
    return {
        "teacher": {
            "backend": "openai",
            "model": "scripted-teacher",
            "base_url": teacher_url,
            "n_samples": 4,
            "temperature": 0.7,
            "max_tokens": 64,
            "request_cache": False,
            "max_concurrency": 2,
            "request_timeout_s": 5,
            "max_retries": 1,  # the backend gives up fast; the task retry window waits
        },
        "student": {
            "backend": "hf",
            "model": str(student_dir),
            "device": "cpu",
            "max_tokens": 16,
            "batch_size": 16,
        },
        "data": {"train": [{"name": "jsonl", "path": str(train)}]},
        "rounds": {"n_rounds": 1, "stop_when_no_growth": False},
        "synthesis": {"n_complex": 1, "n_similar": 1},
        "labeling": {"n_programs": 4, "agreement_threshold": 0.5, "max_rationales": 2},
        "training": {
            "method": "full",
            "epochs": 1,
            "batch_size": 8,
            "max_seq_len": 96,
            "learning_rate": 0.001,
        },
        "evaluation": {"benchmarks": [str(test)], "limit": 4, "batch_size": 4},
        "sandbox": {"max_workers": 2},
        "orchestration": {
            "shard_size": SHARD,
            "max_workers": WORKERS,
            "retry_delay_s": 0.5,
            "retry_max_delay_s": 2.0,
            "retry_window_s": 180,
        },
        "storage": {"root": str(root), "run_name": run_name, "cache_dir": str(root / "cache")},
    }


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(dump_config(RunConfig.model_validate(cfg)))
    return path


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    t = Teacher(tmp_path_factory.mktemp("teacher") / "requests.jsonl", latency_s=LATENCY_S)
    t.start()
    yield t
    t.kill()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def reference(teacher, world, tiny_causal_dir, tmp_path_factory):
    """An undisturbed `fdd run`: its versions and the teacher requests it paid for."""
    folder = tmp_path_factory.mktemp("reference")
    cfg = chaos_config(world, teacher.url, tiny_causal_dir, folder / "runs", "reference")
    path = write_config(folder / "cfg.yaml", cfg)
    before = len(teacher.requests())
    start = time.monotonic()
    done = subprocess.run(
        fdd_cmd(path),
        cwd=REPO,
        env=fdd_env(folder / "prefect-home"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    run_dir = folder / "runs" / "reference"
    return {
        "versions": versions(run_dir),
        "requests": teacher.requests()[before:],
        "elapsed": elapsed,
    }


def test_teacher_down_and_back_the_run_finishes_by_itself(
    reference, teacher, world, tiny_causal_dir, tmp_path
):
    """Chaos 1: the teacher server is SIGKILLed mid-round and restarted 20 s later."""
    cfg = chaos_config(world, teacher.url, tiny_causal_dir, tmp_path / "runs", "teacher-down")
    path = write_config(tmp_path / "cfg.yaml", cfg)
    run_dir = tmp_path / "runs" / "teacher-down"
    log = tmp_path / "fdd.log"
    before = len(teacher.requests())
    proc = start_fdd(path, fdd_env(tmp_path / "prefect-home"), log=log)
    synth = run_dir / "round-1" / "synth-complex"
    try:
        # Mid-round 1: the first synthesis shard is written, others are in flight.
        wait_for(
            lambda: synth.is_dir() and any(synth.glob("*.stats.json")),
            600,
            proc,
            "the first round-1 synthesis shard",
        )
        teacher.kill()
        down_at = time.monotonic()
        time.sleep(20)
        assert proc.poll() is None, "the run gave up while the teacher was down"
        teacher.start()
        up_after = time.monotonic() - down_at
        rc = proc.wait(600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if teacher.proc is None:
            teacher.start()  # for the other tests of the module
    out = log.read_text()
    assert rc == 0, out[-5000:]
    assert up_after >= 20
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed"
    # It said plainly what it waited for, naming the endpoint.
    assert f"waiting for the teacher at {teacher.url}/chat/completions" in out, out[-5000:]
    assert "connection" in out and "next attempt in about" in out
    # The same versions, row for row, as the undisturbed run.
    assert versions(run_dir) == reference["versions"]
    # Paid twice only for requests in flight: at most the shards running at the kill.
    sent = teacher.requests()[before:]
    extra = len(sent) - len(reference["requests"])
    assert sorted(set(sent)) == sorted(set(reference["requests"]))
    assert 0 <= extra <= WORKERS * SHARD, (extra, len(sent), len(reference["requests"]))
