"""Fixtures for tests that need a real Prefect server: one stack and one pair of runs, shared.

Import them into a test module with

    from tests.fixtures_prefect import (  # noqa: F401  (registers the fixtures)
        deployed_runs_fixture, prefect_stack_fixture, prefect_stack_guard_fixture)

(Each fixture is declared with `name=`, so the imported function names differ from the
fixture names tests ask for, and linters see no shadowing.)

Each importing module gets its own fixture definitions, so the stack itself is cached here:
the first module starts it (PostgreSQL + `prefect server`), later modules reuse it, and a
module's teardown stops it once no test still to run needs it. A session finalizer stops
whatever is left, so nothing outlives the test session even when a test fails or is
interrupted. A machine without PostgreSQL skips these tests with the reason.

`deployed_runs` is the scenario both test files look at: `fdd setup` on the fresh server,
a flow registered through `deployments.deploy.deploy` (process pool, cron schedule, a
config file as parameters), a process worker, then two runs triggered with
`run_deployment`. The second run of the same config must be served from the task cache.

Two flows can play the scenario (FDD_PREFECT_IT_FLOW picks one):
- "fdd": the real `fdd-distill` flow, round 0 only, with the real `openai` backend against
  the scripted teacher server (tests/servers/scripted_teacher.py) and a tiny random student
  trained for real;
- "demo": tests/prefect_demo_flow.py, a small flow of the same shape (config parameter,
  mapped shards, cached tasks, a gpu-tagged task, table and markdown artifacts).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.prefect_stack import (
    PrefectStack,
    StackError,
    StackUnavailable,
    free_port,
    remove_stack_files,
    start_stack,
)

POOL = "fdd-it-process"
DEPLOYMENT_NAME = "it-tiny"
CRON = "0 3 * * *"
RUN_TIMEOUT_S = 300


@dataclass(frozen=True)
class Scenario:
    entrypoint: str
    flow_name: str
    run_name: str  # storage.run_name: unlike the deployment's, so the UI test can tell them apart
    artifact_keys: frozenset[str]  # keyed artifacts the first run must publish


SCENARIOS = {
    "fdd": Scenario(
        "flows/distill.py:fdd_distill",
        "fdd-distill",
        "it-fdd-run",
        frozenset(
            f"it-fdd-run-{kind}"
            for kind in (
                "round-0-table",
                "round-0-summary",
                "round-0-dataset",
                "summary",
                "r0-rationales-progress",
            )
        ),
    ),
    "demo": Scenario(
        "tests/prefect_demo_flow.py:fdd_demo",
        "fdd-demo",
        "it-demo-run",
        frozenset({"fdd-demo-round", "fdd-demo-round-summary"}),
    ),
}
SCENARIO = SCENARIOS[os.environ.get("FDD_PREFECT_IT_FLOW", "fdd")]
ENTRYPOINT = SCENARIO.entrypoint
FLOW_NAME = SCENARIO.flow_name

_STATE: dict = {"stack": None, "runs": None, "skip": None}


@dataclass
class DeployedRuns:
    stack: PrefectStack
    deployment_id: object
    config_path: Path
    setup_lines: list[str]
    flow_runs: list = field(default_factory=list)  # prefect FlowRun objects, in run order
    # Hash of the flow code before the first run and after the last: cache keys include the
    # code, so an edit in between (a developer working during the test) rightly recomputes.
    code_before: str = ""
    code_after: str = ""

    @property
    def deployment_ref(self) -> str:
        return f"{FLOW_NAME}/{DEPLOYMENT_NAME}"


def _stop_all() -> None:
    stack = _STATE["stack"]
    _STATE["stack"] = None
    _STATE["runs"] = None
    if stack is not None:
        from tests.prefect_workers import drain

        drain()  # what in-process clients queued for this server, while it still runs
        stack.stop()
        remove_stack_files(stack)


def _needed_later(request) -> bool:
    """Whether a test after this module's last one still uses the stack."""
    items = request.session.items
    mine = [i for i, item in enumerate(items) if getattr(item, "module", None) is request.module]
    if not mine:
        return False
    later = items[max(mine) + 1 :]
    return any("prefect_stack" in getattr(it, "fixturenames", ()) for it in later)


@pytest.fixture(scope="session", name="_prefect_stack_guard")
def prefect_stack_guard_fixture():
    """Session-wide safety net: whatever is still running at the end is stopped."""
    yield
    _stop_all()


@pytest.fixture(scope="module", name="prefect_stack")
def prefect_stack_fixture(request, tmp_path_factory, _prefect_stack_guard) -> PrefectStack:
    """A running Prefect server on a throwaway PostgreSQL."""
    if _STATE["skip"]:
        pytest.skip(_STATE["skip"])
    if _STATE["stack"] is None:
        try:
            _STATE["stack"] = start_stack(tmp_path_factory.mktemp("prefect-stack"))
        except StackUnavailable as exc:
            _STATE["skip"] = str(exc)
            pytest.skip(str(exc))
        except StackError as exc:
            pytest.fail(f"the Prefect stack did not start:\n{exc}")
    try:
        yield _STATE["stack"]
    finally:
        if not _needed_later(request):
            _stop_all()


# --------------------------------------------------------------------------- configs


def _demo_config(folder: Path) -> dict:
    return {
        "orchestration": {"shard_size": 3, "max_workers": 2},
        "storage": {"root": str(folder / "runs"), "run_name": SCENARIO.run_name},
    }


def _start_teacher(stack: PrefectStack, folder: Path) -> str:
    import httpx

    port = free_port()
    proc = stack.start_process(
        "scripted-teacher",
        [sys.executable, "-m", "tests.servers.scripted_teacher", "--port", str(port),
         "--log", str(folder / "teacher-requests.jsonl")],
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.alive():
        try:
            if httpx.get(url + "/models", timeout=1).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the scripted teacher did not start:\n{stack.logs()}")


def _fdd_config(folder: Path, teacher_url: str, student_dir: Path) -> dict:
    """Round 0 of the real flow on a dozen problems: teacher over HTTP, tiny student."""
    from tests.servers.scripted_teacher import numbers_in, world_question

    train, test = folder / "train.jsonl", folder / "test.jsonl"
    for path, prefix, n in ((train, "train", 12), (test, "test", 4)):
        with path.open("w") as fh:
            for i in range(n):
                q = world_question(f"it-{prefix}-{i}", 2)
                fh.write(json.dumps({"question": q, "answer": sum(numbers_in(q))}) + "\n")
    return {
        "teacher": {"backend": "openai", "model": "scripted-teacher", "base_url": teacher_url,
                    "n_samples": 2, "temperature": 0.7, "max_tokens": 64,
                    "request_cache": False, "max_concurrency": 4, "request_timeout_s": 10},
        "student": {"backend": "hf", "model": str(student_dir), "device": "cpu",
                    "max_tokens": 16, "batch_size": 8},
        "data": {"train": [{"name": "jsonl", "path": str(train)}]},
        "rounds": {"n_rounds": 0},
        "labeling": {"n_programs": 2, "max_rationales": 2},
        "training": {"method": "full", "epochs": 1, "batch_size": 8, "max_seq_len": 128},
        "evaluation": {"benchmarks": [str(test)], "limit": 4, "batch_size": 4},
        "sandbox": {"max_workers": 2},
        "orchestration": {"shard_size": 6, "max_workers": 2, "retry_delay_s": 0.1},
        "storage": {"root": str(folder / "runs"), "run_name": SCENARIO.run_name,
                    "cache_dir": str(folder / "cache")},
    }  # fmt: skip


def _write_config(request, stack: PrefectStack, folder: Path) -> Path:
    if SCENARIO is SCENARIOS["fdd"]:
        student = request.getfixturevalue("tiny_causal_dir")
        cfg = _fdd_config(folder, _start_teacher(stack, folder), student)
    else:
        cfg = _demo_config(folder)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# --------------------------------------------------------------------------- runs


def source_fingerprint() -> str:
    """Hash of every source a cache key can depend on (fdd_core, tasks, flows, the demo)."""
    repo = Path(__file__).resolve().parents[1]
    paths = [repo / "tests" / "prefect_demo_flow.py"]
    for folder in ("fdd_core", "tasks", "flows"):
        paths += sorted((repo / folder).rglob("*"))
    h = hashlib.sha256()
    for path in paths:
        if path.is_file() and path.suffix in (".py", ".txt", ".yaml", ".jsonl"):
            h.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _wait_final(flow_run_id, timeout: float):
    """Poll the API until the flow run is final (or the timeout passes); returns it."""
    from prefect import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            if time.monotonic() > deadline:
                return run
            time.sleep(1)


@pytest.fixture(scope="module", name="deployed_runs")
def deployed_runs_fixture(request, prefect_stack: PrefectStack, tmp_path_factory) -> DeployedRuns:
    """`fdd setup`, deploy a config, start a worker, and run the deployment twice."""
    if _STATE["runs"] is not None:
        return _STATE["runs"]
    from prefect.deployments import run_deployment

    from deployments import deploy as dep

    folder = tmp_path_factory.mktemp("it-config")
    config_path = _write_config(request, prefect_stack, folder)
    with prefect_stack.settings():
        setup_lines = asyncio.run(dep.asetup(POOL, gpu_limit=1))
        deployment_id = dep.deploy(
            config_path, POOL, cron=CRON, name=DEPLOYMENT_NAME, entrypoint=ENTRYPOINT
        )
        prefect_stack.start_worker(POOL)
        runs = DeployedRuns(prefect_stack, deployment_id, config_path, setup_lines)
        runs.code_before = source_fingerprint()
        for _ in range(2):
            # timeout=0: only create the run; the worker picks it up and runs it.
            created = run_deployment(f"{FLOW_NAME}/{DEPLOYMENT_NAME}", timeout=0)
            runs.flow_runs.append(_wait_final(created.id, RUN_TIMEOUT_S))
        runs.code_after = source_fingerprint()
    _STATE["runs"] = runs
    return runs
