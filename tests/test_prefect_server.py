"""A real Prefect server on PostgreSQL: setup, deployment, worker runs, artifacts, cache.

Everything goes through the public surfaces a cluster user has: `deployments.deploy`
(the code behind `fdd setup` / `fdd deploy`), `prefect worker start`, `run_deployment`,
and the Prefect API read back with `get_client`. See tests/fixtures_prefect.py for the
scenario; the stack is stopped at the end even when a test fails.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fdd_core.config import load_config
from tests.fixtures_prefect import (  # noqa: F401  (the fixtures register themselves)
    CRON,
    DEPLOYMENT_NAME,
    ENTRYPOINT,
    POOL,
    SCENARIO,
    deployed_runs_fixture,
    prefect_stack_fixture,
    prefect_stack_guard_fixture,
)

pytestmark = [pytest.mark.slow, pytest.mark.server]

REPO = Path(__file__).resolve().parents[1]


def _client():
    from prefect import get_client

    return get_client(sync_client=True)


def _task_runs(flow_run_id, expected: int | None = None, timeout: float = 30.0):
    """Task runs of a flow run and of its subflow runs (the subflow call stubs excluded).

    Task run states reach the server as events, so this waits for them to settle.
    """
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    deadline = time.monotonic() + timeout
    with _client() as client:
        while True:
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
                )
            )
            ids = [flow_run_id] + [c.id for c in children]
            stubs = {c.parent_task_run_id for c in children}
            runs = client.read_task_runs(
                task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=ids)),
                limit=200,  # the API's maximum page
            )
            runs = [r for r in runs if r.id not in stubs]
            settled = all(r.state is not None and r.state.is_final() for r in runs)
            if runs and settled and (expected is None or len(runs) >= expected):
                return runs
            if time.monotonic() > deadline:
                return runs
            time.sleep(0.5)


def test_setup_creates_the_process_pool_and_the_gpu_limit(deployed_runs):
    from deployments.deploy import GPU_TAG, asetup

    assert any("created process work pool" in line for line in deployed_runs.setup_lines)
    with deployed_runs.stack.settings(), _client() as client:
        pool = client.read_work_pool(POOL)
        assert pool.type == "process"
        assert pool.base_job_template["job_configuration"]["command"]  # a usable template
        assert client.read_concurrency_limit_by_tag(GPU_TAG).concurrency_limit == 1
        # Idempotent: a second setup keeps the pool and updates the limit in place.
        again = asyncio.run(asetup(POOL, gpu_limit=2))
        assert any("already exists" in line for line in again)
        assert client.read_concurrency_limit_by_tag(GPU_TAG).concurrency_limit == 2
        asyncio.run(asetup(POOL, gpu_limit=1))
        assert client.read_concurrency_limit_by_tag(GPU_TAG).concurrency_limit == 1


def test_deployment_carries_the_config_schedule_pool_and_code_location(deployed_runs):
    with deployed_runs.stack.settings(), _client() as client:
        dep = client.read_deployment(deployed_runs.deployment_id)
    assert dep.name == DEPLOYMENT_NAME
    assert dep.work_pool_name == POOL
    assert dep.entrypoint == ENTRYPOINT
    # Every setting of the config file, defaults filled in, is the `config` parameter.
    assert dep.parameters["config"] == load_config(deployed_runs.config_path).model_dump(
        mode="json"
    )
    assert [s.schedule.cron for s in dep.schedules] == [CRON]
    # The process worker runs the flow from this checkout.
    steps = [next(iter(step)) for step in dep.pull_steps]
    assert steps == ["prefect.deployments.steps.set_working_directory"]
    assert Path(dep.pull_steps[0][steps[0]]["directory"]) == REPO


def test_both_runs_completed_on_the_worker(deployed_runs):
    runs = deployed_runs.flow_runs
    assert len(runs) == 2
    for run in runs:
        assert run.state is not None and run.state.is_completed(), (
            f"{run.name}: {run.state!r}\n{deployed_runs.stack.logs()}"
        )
        assert run.deployment_id == deployed_runs.deployment_id
        assert run.work_pool_name == POOL


def _family(client, flow_run_id) -> list:
    """A flow run's id and its subflow runs' ids (the rounds of the FDD flow)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    children = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
        )
    )
    return [flow_run_id] + [c.id for c in children]


def test_first_run_published_its_round_artifacts(deployed_runs):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    first = deployed_runs.flow_runs[0]
    with deployed_runs.stack.settings(), _client() as client:
        ids = _family(client, first.id)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
        )
    by_type = {}
    for art in artifacts:
        by_type.setdefault(art.type, []).append(art)
    assert by_type.get("table") and by_type.get("markdown"), [(a.key, a.type) for a in artifacts]
    # Keyed, so the UI keeps each artifact's history across runs.
    missing = SCENARIO.artifact_keys - {a.key for a in artifacts}
    assert not missing, f"artifacts not published: {sorted(missing)}"
    assert all(t.data for t in by_type["table"])


def test_second_run_is_served_from_the_task_cache(deployed_runs):
    if deployed_runs.code_before != deployed_runs.code_after:
        pytest.skip("sources changed while the runs were going: cache keys include the code")
    first, second = deployed_runs.flow_runs
    with deployed_runs.stack.settings():
        first_tasks = _task_runs(first.id)
        second_tasks = _task_runs(second.id, expected=len(first_tasks))
    assert first_tasks, "the first run recorded no task runs"
    assert {t.state.name for t in first_tasks} == {"Completed"}
    assert len(second_tasks) == len(first_tasks)
    not_cached = sorted(t.name for t in second_tasks if t.state.name != "Cached")
    assert not_cached == [], f"recomputed on the second run: {not_cached}"


def _overlaps(spans: list[tuple[float, float]]) -> bool:
    spans = sorted(spans)
    return any(b[0] < a[1] for a, b in itertools.pairwise(spans))


def test_gpu_limit_serializes_gpu_tagged_tasks(deployed_runs):
    """What `fdd setup` buys: tasks tagged "gpu" never run at once, whichever flow runs them.

    Three mapped tasks on three threads: without the tag they overlap (so this can fail),
    with it the server hands out one slot at a time.
    """
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner

    from deployments.deploy import GPU_TAG, asetup

    def hold(i: int) -> tuple[float, float]:
        start = time.monotonic()
        time.sleep(1.0)
        return start, time.monotonic()

    free_task = task(hold, name="hold-cpu")
    gpu_task = task(hold, name="hold-gpu", tags=[GPU_TAG])

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=3))
    def contend(gpu: bool) -> list[tuple[float, float]]:
        return [f.result() for f in (gpu_task if gpu else free_task).map(range(3))]

    with deployed_runs.stack.settings():
        asyncio.run(asetup(POOL, gpu_limit=1))
        assert _overlaps(contend(False)), "untagged tasks did not run in parallel"
        assert not _overlaps(contend(True)), "gpu-tagged tasks ran at the same time"


def test_fdd_deploy_command_registers_against_the_server(deployed_runs, tmp_path):
    """The CLI path, `fdd deploy`, in a subprocess against the server."""
    stack = deployed_runs.stack
    cfg = tmp_path / "cli-config.yaml"
    cfg.write_text("orchestration:\n  shard_size: 5\n")
    cmd = [sys.executable, "-m", "fdd", "deploy", str(cfg), "--pool", POOL, "--name",
           "from-cli", "--cron", "30 2 * * 1", "--set", "teacher.n_samples=2"]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=stack.client_env(), capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "registered" in done.stdout
    with stack.settings(), _client() as client:
        # The CLI deploys the real FDD flow (flows/distill.py:fdd_distill).
        dep = client.read_deployment_by_name("fdd-distill/from-cli")
    assert dep.parameters["config"]["teacher"]["n_samples"] == 2
    assert dep.parameters["config"]["orchestration"]["shard_size"] == 5
    assert [s.schedule.cron for s in dep.schedules] == ["30 2 * * 1"]

    bad = subprocess.run(cmd[:5] + ["--pool", "no-such-pool"], cwd=REPO, env=stack.client_env(),
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert bad.returncode == 2
    assert "no-such-pool" in bad.stderr and "fdd setup" in bad.stderr


def test_sweep_runs_its_variants_as_runs_of_the_deployment(deployed_runs, tmp_path):
    """`fdd sweep --deployment`: the shared round 0 and each variant are runs of the
    registered deployment, picked up by the pool's worker, linked to the sweep's flow run."""
    if SCENARIO.flow_name != "fdd-distill":
        pytest.skip("the demo scenario has no fdd-distill deployment to sweep over")
    import json

    stack = deployed_runs.stack
    cmd = [sys.executable, "-m", "fdd", "sweep", str(deployed_runs.config_path),
           "--vary", "synthesis.strategy=fdd,none", "--name", "dep-sweep",
           "--out", str(tmp_path / "dep-sweep"), "--max-parallel", "2",
           "--deployment", deployed_runs.deployment_ref]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=stack.client_env(), capture_output=True,
                          text=True, timeout=600, check=False)  # fmt: skip
    out = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, out + "\n" + stack.logs()
    exp = json.loads((tmp_path / "dep-sweep" / "experiment.json").read_text())
    assert [v["status"] for v in exp["variants"]] == ["completed", "completed"], out
    assert [g["status"] for g in exp["shared_round0"]] == ["completed"]
    labels = [v["flow_run_name"] for v in exp["variants"]]
    labels.append(f"dep-sweep-round0-{exp['shared_round0'][0]['key']}")

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with stack.settings(), _client() as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=labels))
        )
        sweep_runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["sweep-dep-sweep"]))
        )
    by_name = {r.name: r for r in runs}
    assert sorted(by_name) == sorted(labels)
    assert [r.state.is_completed() for r in sweep_runs] == [True]
    run_dirs = {v["flow_run_name"]: v["run_dir"] for v in exp["variants"]}
    run_dirs[labels[-1]] = exp["shared_round0"][0]["run_dir"]
    for label, run in by_name.items():
        # A run of the deployment, on the pool's worker, not a local subflow of the sweep.
        assert run.deployment_id == deployed_runs.deployment_id, label
        assert run.work_pool_name == POOL, label
        assert run.state is not None and run.state.is_completed(), f"{label}: {run.state!r}"
        assert run.parameters["run_dir"] == run_dirs[label]
        assert run.parent_task_run_id is not None, f"{label} is not linked to the sweep"
    for v in exp["variants"]:
        record = json.loads((Path(v["run_dir"]) / "run.json").read_text())
        assert record["status"] == "completed"
        assert record["config"]["synthesis"]["strategy"] == v["overrides"]["synthesis.strategy"]


def _tick(deployed_runs, parameters: dict, when=None):
    """One tick of the cron-scheduled deployment, triggered by hand (optionally as scheduled
    at `when`), run by the pool's worker; returns the final flow run."""
    from prefect.deployments import run_deployment

    from tests.fixtures_prefect import FLOW_NAME, RUN_TIMEOUT_S, _wait_final

    with deployed_runs.stack.settings():
        created = run_deployment(
            f"{FLOW_NAME}/{DEPLOYMENT_NAME}", parameters=parameters, scheduled_time=when,
            timeout=0,
        )  # fmt: skip
        run = _wait_final(created.id, RUN_TIMEOUT_S)
    assert run.state is not None and run.state.is_completed(), (
        f"{run.name}: {run.state!r}\n{deployed_runs.stack.logs()}"
    )
    return run


def _teacher_requests(deployed_runs) -> int:
    log = Path(deployed_runs.config_path).parent / "teacher-requests.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_scheduled_ticks_make_progress_by_run_name_template_or_by_added_rounds(
    deployed_runs, tmp_path
):
    """The two meanings a schedule can have (fdd_core/schedules.py), on the cron-scheduled
    deployment of a real Prefect server with its ticks triggered by hand:
    a run-name template gives each tick its own run folder (named from the tick's scheduled
    time) while the teacher's request cache is shared, and `add_rounds` extends the latest
    run of the config by a round per tick, the finished rounds being cache hits."""
    if SCENARIO.flow_name != "fdd-distill":
        pytest.skip("the demo scenario has no fdd-distill deployment")
    import json
    from datetime import datetime, timedelta, timezone

    import yaml

    with deployed_runs.stack.settings(), _client() as client:
        dep = client.read_deployment(deployed_runs.deployment_id)
    assert [s.schedule.cron for s in dep.schedules] == [CRON]  # the ticks are of this schedule

    base = yaml.safe_load(Path(deployed_runs.config_path).read_text())
    base["teacher"]["request_cache"] = True

    # 1. A fresh run per tick: two ticks, as scheduled on two nights.
    nightly = json.loads(json.dumps(base))
    nightly["storage"].update(root=str(tmp_path / "nightly"), run_name="tick-{datetime}")
    day = datetime.now(timezone.utc).replace(hour=3, minute=0, second=0, microsecond=0)
    nights = [day - timedelta(days=2), day - timedelta(days=1)]
    names = [f"tick-{n.strftime('%Y-%m-%dT%H%M%S')}" for n in nights]
    before = _teacher_requests(deployed_runs)
    first = _tick(deployed_runs, {"config": nightly}, nights[0])
    paid_first = _teacher_requests(deployed_runs) - before
    second = _tick(deployed_runs, {"config": nightly}, nights[1])
    paid_second = _teacher_requests(deployed_runs) - before - paid_first
    assert [first.name, second.name] == names
    for name in names:
        record = json.loads((tmp_path / "nightly" / name / "run.json").read_text())
        assert record["status"] == "completed" and len(record["rounds"]) == 1
    assert paid_first > 0
    assert paid_second == 0, "the second tick asked the teacher again (request cache not shared)"

    # 2. One run that grows a round per tick.
    growing = json.loads(json.dumps(base))
    growing["storage"].update(root=str(tmp_path / "growing"), run_name="grow")
    run_json = tmp_path / "growing" / "grow" / "run.json"
    _tick(deployed_runs, {"config": growing})
    r0 = json.loads(run_json.read_text())["rounds"]
    assert [r["round"] for r in r0] == [0]
    for want in (1, 2):
        before = _teacher_requests(deployed_runs)
        _tick(deployed_runs, {"config": growing, "add_rounds": 1})
        record = json.loads(run_json.read_text())
        assert record["status"] == "completed"
        assert [r["round"] for r in record["rounds"]] == list(range(want + 1))
        assert record["n_rounds"] == want
        # The finished rounds are the same (cache hits): same dataset versions and students.
        assert record["rounds"][0]["dataset"] == r0[0]["dataset"]
        assert record["rounds"][0]["model"] == r0[0]["model"]
        assert _teacher_requests(deployed_runs) > before  # the new round did ask the teacher
        r0 = record["rounds"]
