"""Whole-run chaos tests: real `fdd run` processes, the scripted teacher server, a tiny student.

Each disturbed run is compared with an undisturbed run of the same config and seeds (dataset
version ids and every row), and the teacher's request log shows what was paid twice.
See docs/reliability.md for the guarantees these tests prove.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fdd_core.config import RunConfig, dump_config
from tests.chaos import REPO, Teacher, fdd_cmd, fdd_env, start_fdd, versions, wait_for
from tests.chaos_inject import POINTS
from tests.fixtures_prefect import (  # noqa: F401  (the fixtures register themselves)
    prefect_stack_fixture,
    prefect_stack_guard_fixture,
)
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
        "run_dir": run_dir,
        "cfg_path": path,
        "prefect_home": folder / "prefect-home",
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
    synth = run_dir / "round-1" / "synth-similar"  # the tiny student solves none: no "complex"
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


SERVER_DOWN_S = 15


def test_prefect_server_restart_mid_run_rides_through_or_fails_clearly_then_resumes(
    reference, teacher, world, tiny_causal_dir, prefect_stack, tmp_path
):
    """Chaos 4: `fdd run` against the PostgreSQL-backed Prefect server, which is stopped
    mid-round 1 and started again (same port, same database) 15 s later."""
    cfg = chaos_config(world, teacher.url, tiny_causal_dir, tmp_path / "runs", "api-restart")
    path = write_config(tmp_path / "cfg.yaml", cfg)
    run_dir = tmp_path / "runs" / "api-restart"
    env = dict(fdd_env(tmp_path / "prefect-home"), PREFECT_API_URL=prefect_stack.api_url)
    log = tmp_path / "fdd.log"
    proc = start_fdd(path, env, log=log)
    synth = run_dir / "round-1" / "synth-similar"
    try:
        wait_for(
            lambda: synth.is_dir() and any(synth.glob("*.stats.json")),
            600,
            proc,
            "the first round-1 synthesis shard",
        )
        prefect_stack.server.stop()
        time.sleep(SERVER_DOWN_S)
        prefect_stack.start_server()
        rc = proc.wait(600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if prefect_stack.server is None or not prefect_stack.server.alive():
            prefect_stack.start_server()  # for the tests after this one
    out = log.read_text()
    _assert_nothing_half_written_looks_whole(run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    if rc != 0:
        # It failed: with a message that says the Prefect API could not be reached, and
        # `run.json` says failed, not completed. A plain re-run must then resume.
        assert record["status"] in ("failed", "running"), record["status"]
        assert prefect_stack.api_url.split("/api")[0] in out or "Prefect" in out, out[-5000:]
        done = subprocess.run(fdd_cmd(path), cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=900)  # fmt: skip
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        record = json.loads((run_dir / "run.json").read_text())
    print(f"chaos 4: the run {'rode through' if rc == 0 else f'failed (rc={rc}), then resumed'}")
    assert record["status"] == "completed"
    assert versions(run_dir) == reference["versions"]
    # The run's flow runs are on that server (it was the run's API, not a temporary one).
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with prefect_stack.settings(), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["api-restart"]))
        )
    assert runs, "no flow run named api-restart on the stack's server"
    # The flow run's final state reached the server (the last run, after a re-run).
    last = max(runs, key=lambda r: r.created)
    assert last.state is not None and last.state.is_completed(), last.state


def _stop_and_check(proc, sig, *, group: bool, what: str) -> tuple[float, list[int]]:
    """Signal the run; it must exit within seconds and leave no child process behind."""
    from tests.chaos import alive, descendants

    children = descendants(proc.pid)
    assert children, "expected sandbox workers and a Prefect server below the run"
    start = time.monotonic()
    if group:  # Ctrl-C in a terminal signals the foreground process group
        os.killpg(proc.pid, sig)
    else:  # `kill PID`, or a scheduler stopping the job
        proc.send_signal(sig)
    rc = proc.wait(60)
    took = time.monotonic() - start
    # 130 after Ctrl-C; after SIGTERM Prefect's own bridge re-kills the process with it.
    assert rc in ((130,) if sig == signal.SIGINT else (130, -signal.SIGTERM)), f"{what}: rc {rc}"
    time.sleep(0.5)
    survivors = [p for p in children if alive(p)]
    assert survivors == [], f"{what}: child processes survived: {survivors}"
    return took, children


def test_cancel_with_ctrl_c_and_sigterm_records_cancelled_and_resumes(
    reference, teacher, world, tiny_causal_dir, tmp_path
):
    """Chaos 3 (cancellation) and 7 (a second `fdd run` on the same folder is refused)."""
    cfg = chaos_config(world, teacher.url, tiny_causal_dir, tmp_path / "runs", "cancelled")
    path = write_config(tmp_path / "cfg.yaml", cfg)
    run_dir = tmp_path / "runs" / "cancelled"
    env = fdd_env(tmp_path / "prefect-home")
    record = lambda: json.loads((run_dir / "run.json").read_text())  # noqa: E731

    # 1. Ctrl-C mid round 0; meanwhile a second run of the same folder is refused at once.
    proc = start_fdd(path, env, log=tmp_path / "run1.log")
    try:
        r0 = run_dir / "round-0" / "rationales"
        wait_for(lambda: r0.is_dir() and any(r0.glob("*.stats.json")), 600, proc, "round 0")
        second = subprocess.run(
            fdd_cmd(path), cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        assert second.returncode == 3, second.stdout[-2000:] + second.stderr[-2000:]
        assert f"pid {proc.pid}" in second.stderr and "in use by another run" in second.stderr
        assert record()["status"] == "running"
        took, _ = _stop_and_check(proc, signal.SIGINT, group=True, what="Ctrl-C")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert took < 20, f"Ctrl-C took {took:.1f} s"
    assert record()["status"] == "cancelled"
    assert not (run_dir / "run.lock").exists()

    # 2. Resume, then SIGTERM (to the main process only) mid round 1.
    proc = start_fdd(path, env, log=tmp_path / "run2.log")
    try:
        r1 = run_dir / "round-1" / "grade"
        wait_for(lambda: r1.is_dir() and any(r1.iterdir()), 600, proc, "round 1")
        took, _ = _stop_and_check(proc, signal.SIGTERM, group=False, what="SIGTERM")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert took < 20, f"SIGTERM took {took:.1f} s"
    rec = record()
    assert rec["status"] == "cancelled" and len(rec["rounds"]) == 1, rec["status"]

    # 3. The next start resumes and finishes with the undisturbed run's versions.
    done = subprocess.run(
        fdd_cmd(path), cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert record()["status"] == "completed"
    assert versions(run_dir) == reference["versions"]


def _assert_nothing_half_written_looks_whole(run_dir: Path) -> None:
    """Every dataset version and student in its final place is complete and intact."""
    import hashlib

    for folder in sorted((run_dir / "datasets").glob("*")):
        if folder.name.startswith("."):
            continue  # a temporary folder: never read as a version
        manifest = json.loads((folder / "manifest.json").read_text())
        for name, meta in manifest["files"].items():
            data = (folder / name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == meta["sha256"], folder / name
    for student in run_dir.glob("round-*/student"):
        assert (student / "meta.json").is_file(), f"{student} has no completion marker"
    json.loads((run_dir / "run.json").read_text())  # whole JSON, old or new


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_a_point_then_rerun_gives_identical_versions(
    point, reference, teacher, world, tiny_causal_dir, tmp_path
):
    """Chaos 2: SIGKILL (from inside, at an exact point) and a plain re-run."""
    from tests.chaos import alive, descendants

    cfg = chaos_config(world, teacher.url, tiny_causal_dir, tmp_path / "runs", "killed")
    path = write_config(tmp_path / "cfg.yaml", cfg)
    run_dir = tmp_path / "runs" / "killed"
    env = fdd_env(tmp_path / "prefect-home")
    cmd = [sys.executable, "-m", "tests.chaos_inject", point, *fdd_cmd(path)[3:]]
    # Output to a file: children that outlive the kill (the temporary Prefect server) would
    # hold a pipe open.
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        seen: dict[int, str] = {}
        deadline = time.monotonic() + 900
        while proc.poll() is None and time.monotonic() < deadline:
            for p in descendants(proc.pid):
                seen.setdefault(p, _cmdline(p))
            time.sleep(0.2)
        proc.wait(60)
    out = (tmp_path / "killed.log").read_text()
    assert proc.returncode == -signal.SIGKILL, f"rc={proc.returncode}\n{out[-3000:]}"
    assert f"SIGKILL at {point}" in out
    time.sleep(2.0)
    # Same pid and same command line: the same process (not a reused pid).
    orphans = [p for p, cmd in seen.items() if cmd and alive(p) and _cmdline(p) == cmd]
    workers = [p for p in orphans if "sandbox_worker" in _cmdline(p)]
    for p in orphans:  # what nothing stops after a SIGKILL (docs/reliability.md)
        os.kill(p, signal.SIGKILL)
    assert workers == [], f"sandbox workers outlived the killed run: {workers}"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    _assert_nothing_half_written_looks_whole(run_dir)

    done = subprocess.run(fdd_cmd(path), cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    assert versions(run_dir) == reference["versions"]
    _assert_nothing_half_written_looks_whole(run_dir)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_disk_full_fails_clearly_then_resumes_after_space_is_freed(
    reference, teacher, world, tiny_causal_dir, tmp_path
):
    """Chaos 5: the storage root is a 24 MiB tmpfs; round 1's student (16 MiB) does not fit."""
    from tests.chaos import SmallFS

    with SmallFS(tmp_path / "small", "24m") as fs:
        cfg = chaos_config(world, teacher.url, tiny_causal_dir, fs.path / "runs", "full")
        cfg["storage"]["cache_dir"] = str(tmp_path / "cache")
        path = write_config(tmp_path / "cfg.yaml", cfg)
        run_dir = fs.path / "runs" / "full"
        env = fdd_env(tmp_path / "prefect-home")
        failed = subprocess.run(fdd_cmd(path), cwd=REPO, env=env, capture_output=True, text=True)
        out = failed.stdout + failed.stderr
        assert failed.returncode != 0, out[-3000:]
        record = json.loads((run_dir / "run.json").read_text())
        assert record["status"] == "failed"
        student = run_dir / "round-1" / "student"
        assert f"disk full while writing {student}: it needs about" in record["error"], record[
            "error"
        ]
        assert "No space left on device" in out and f"disk full while writing {student}" in out
        assert not student.exists() and not list(student.parent.glob(".student.tmp-*"))
        _assert_nothing_half_written_looks_whole(run_dir)
        assert len(record["rounds"]) == 1  # round 0 is finished and kept

        fs.resize("64m")  # space freed
        done = subprocess.run(fdd_cmd(path), cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
        assert versions(run_dir) == reference["versions"]


def _shard_result_files(results: Path) -> list[Path]:
    """Result files of teacher shards (rationales, synthesis, labels)."""
    from prefect._internal.result_records import ResultRecord

    import tasks.common  # noqa: F401  (registers the checksummed serializer)
    from fdd_core.stages import ShardResult

    out = []
    for path in sorted(results.iterdir()):
        try:
            value = ResultRecord.deserialize(path.read_bytes()).result
        except Exception:
            continue
        teacher_shard = ("/rationales/", "/label/", "/synth-")
        if isinstance(value, ShardResult) and any(k in value.path for k in teacher_shard):
            out.append(path)
    return out


def test_damaged_result_files_are_reported_and_recomputed_on_resume(reference, teacher):
    """Chaos 6: truncate one Prefect result file and alter another; the re-run says so,
    recomputes just those tasks, and ends with the same versions. Runs late (only the
    --add-rounds test comes after it): it re-runs the reference run folder in place."""
    import base64

    run_dir = reference["run_dir"]
    files = _shard_result_files(run_dir / "prefect-results")
    assert len(files) >= 4
    truncated, altered = files[0], files[len(files) // 2]
    truncated.write_bytes(truncated.read_bytes()[:100])
    record = json.loads(altered.read_text())
    head, payload = record["result"].encode().split(b"\n", 1)
    raw = bytearray(base64.decodebytes(payload))
    raw[len(raw) // 2] ^= 0x01
    record["result"] = (head + b"\n" + base64.encodebytes(bytes(raw))).decode()
    altered.write_text(json.dumps(record))

    before = len(teacher.requests())
    done = subprocess.run(
        fdd_cmd(reference["cfg_path"]),
        cwd=REPO,
        env=fdd_env(reference["prefect_home"]),
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    for path in (truncated, altered):
        assert f"damaged result file {path}" in out, out[-4000:]
        assert (path.parent / (path.name + ".corrupt")).exists()
    assert versions(run_dir) == reference["versions"]
    # Only the two damaged shards went back to the teacher.
    resent = teacher.requests()[before:]
    assert 0 < len(resent) <= 2 * SHARD, len(resent)


HANG_S = 20
SHARD_LIMIT_S = 4


def test_hung_teacher_is_stopped_by_the_shard_limit_retried_and_the_run_finishes(
    reference, world, tiny_causal_dir, tmp_path
):
    """Chaos 8 (generation): a teacher server that accepts every request and answers none
    for 20 s. The request timeout is 10 minutes, so only the shard's own time limit (4 s,
    enforced inside the `openai` backend: fdd_core.deadline) can stop each attempt; the
    shards are retried by Prefect and the run finishes by itself with identical versions."""
    hang = tmp_path / "hang"
    hang.touch()
    hung_teacher = Teacher(tmp_path / "requests.jsonl", latency_s=LATENCY_S, hang_file=hang)
    hung_teacher.start()
    cfg = chaos_config(world, hung_teacher.url, tiny_causal_dir, tmp_path / "runs", "hung")
    cfg["teacher"]["request_timeout_s"] = 600
    cfg["orchestration"]["shard_timeout_s"] = SHARD_LIMIT_S
    path = write_config(tmp_path / "cfg.yaml", cfg)
    run_dir = tmp_path / "runs" / "hung"
    log = tmp_path / "fdd.log"
    proc = start_fdd(path, fdd_env(tmp_path / "prefect-home"), log=log)
    try:
        wait_for(lambda: hung_teacher.hung() > 0, 300, proc, "a request to the hung teacher")
        hung_at = time.monotonic()
        # Attempts keep being stopped and retried while the server hangs.
        wait_for(
            lambda: log.read_text().count(f"time limit of {SHARD_LIMIT_S} s") >= 2,
            120,
            proc,
            "two attempts stopped by their time limit",
        )
        time.sleep(max(0.0, HANG_S - (time.monotonic() - hung_at)))
        assert proc.poll() is None, "the run gave up while the teacher hung"
        hang.unlink()
        rc = proc.wait(600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        hang.unlink(missing_ok=True)
        hung_teacher.kill()
    out = log.read_text()
    assert rc == 0, out[-5000:]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    endpoint = f"{hung_teacher.url}/chat/completions"
    assert (
        f"stopped by its time limit of {SHARD_LIMIT_S} s (orchestration.shard_timeout_s) "
        f"while waiting for {endpoint}" in out
    ), out[-5000:]
    assert f"waiting for the teacher at {endpoint}" in out
    assert versions(run_dir) == reference["versions"]
    # Hung requests were never answered (so never paid); every prompt was answered once
    # the server came back, each at most once more than in the undisturbed run.
    sent = hung_teacher.requests()
    assert hung_teacher.hung() >= 2
    assert sorted(set(sent)) == sorted(set(reference["requests"]))
    assert 0 <= len(sent) - len(reference["requests"]) <= WORKERS * SHARD


def test_fdd_run_add_rounds_extends_the_latest_run_by_a_round(reference, teacher):
    """`fdd run CONFIG --add-rounds 1` (a schedule's continuation, by hand): the latest run of
    the config, the reference (rounds 0-1), gets round 2; rounds 0-1 are cache hits (their
    students are not trained again) with the same versions. Runs after the test above, on
    the reference run folder in place."""
    run_dir = reference["run_dir"]

    def students() -> dict[str, int]:  # each student's meta.json, by the time it was written
        return {
            str(p.parent.relative_to(run_dir)): p.stat().st_mtime_ns
            for p in sorted(run_dir.glob("round-*/student/meta.json"))
        }

    trained_before = students()
    assert set(trained_before) == {"round-0/student", "round-1/student"}
    before = len(teacher.requests())
    done = subprocess.run(
        fdd_cmd(reference["cfg_path"], "--add-rounds", "1"),
        cwd=REPO,
        env=fdd_env(reference["prefect_home"]),
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert f"--add-rounds 1: extending {run_dir.resolve()} from round 1 to round 2" in out
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed" and record["n_rounds"] == 2
    assert [r["round"] for r in record["rounds"]] == [0, 1, 2]
    assert versions(run_dir)[:2] == reference["versions"]
    # Only round 2 did work: the earlier students were not trained again (their files are
    # untouched), round 2's student is new, and the teacher was asked for round 2.
    assert record["rounds"][2]["added"] > 0
    after = students()
    assert {k: after[k] for k in trained_before} == trained_before
    assert "round-2/student" in after
    assert record["rounds"][2]["model"]["path"].endswith("round-2/student")
    assert len(teacher.requests()) > before
