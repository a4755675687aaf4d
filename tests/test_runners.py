"""flows.runners: the task runner named in the config runs mapped shards, with equal results.

A shard task does real deterministic work (fdd problem ids plus a hash chain over each
question); the same shards mapped under the default thread runner and under a local Dask
cluster must give identical results, and the Dask run must really have happened on Dask's
workers (otherwise the runner was silently ignored). The cluster runs its two workers in
this process: worker processes take 15-30 s to spawn on a 2-core CI machine, and what they
add (pickling the task) is Dask's business, not this module's.
"""

from __future__ import annotations

import os
import threading

import pytest
from prefect import flow, task

from fdd_core.config import OrchestrationConfig
from fdd_core.schemas import content_hash, problem_id
from flows.runners import TaskRunnerUnavailable, make_task_runner

N_SHARDS = 8
PER_SHARD = 25


def _shards() -> list[list[str]]:
    return [
        [
            f"Sam has {s * PER_SHARD + i} apples and buys {i + 3} more. How many now?"
            for i in range(PER_SHARD)
        ]
        for s in range(N_SHARDS)
    ]


@task
def hash_shard(index: int, questions: list[str]) -> dict:
    """What a generation shard does, minus the model: stable ids and a digest of the shard."""
    ids = [problem_id(q) for q in questions]
    digest = ""
    for q in questions:  # a chain, so any reordering inside the shard changes the digest
        for _ in range(200):
            digest = content_hash(digest, q)
    return {
        "index": index,
        "ids": ids,
        "digest": digest,
        "pid": os.getpid(),
        "thread": threading.current_thread().name,
    }


@flow
def shard_flow(shards: list[list[str]]) -> list[dict]:
    futures = hash_shard.map(range(len(shards)), shards)
    return [f.result() for f in futures]


def _run(runner) -> list[dict]:
    from prefect.settings import (
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    # The first flow run of a session starts Prefect's ephemeral server; its 20 s default
    # is too short on a busy 2-core CI machine.
    with temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 120}):
        return shard_flow.with_options(task_runner=runner)(_shards())


def _payload(results: list[dict]) -> list[tuple]:
    return [(r["index"], tuple(r["ids"]), r["digest"]) for r in results]


def test_threads_is_default_and_bounded():
    runner = make_task_runner(OrchestrationConfig(max_workers=3))
    from prefect.task_runners import ThreadPoolTaskRunner

    assert isinstance(runner, ThreadPoolTaskRunner)
    assert runner._max_workers == 3  # Prefect's own default is unbounded


@pytest.mark.slow
def test_dask_local_cluster_matches_thread_runner():
    pytest.importorskip("prefect_dask", reason="needs the dask extra: pip install 'fdd[dask]'")
    threads = _run(make_task_runner(OrchestrationConfig(task_runner="threads", max_workers=2)))
    assert [r["index"] for r in threads] == list(range(N_SHARDS))
    assert len({r["digest"] for r in threads}) == N_SHARDS  # shards really differ
    assert {r["pid"] for r in threads} == {os.getpid()}

    orch = OrchestrationConfig(task_runner="dask", max_workers=2)
    dask_results = _run(make_task_runner(orch, local_processes=False))
    assert _payload(dask_results) == _payload(threads)
    # The work ran on Dask's worker threads, not in Prefect's thread pool.
    assert all("Dask" in r["thread"] for r in dask_results), {r["thread"] for r in dask_results}
    assert not any("Dask" in r["thread"] for r in threads)


def test_dask_runner_uses_given_scheduler_address():
    pytest.importorskip("prefect_dask", reason="needs the dask extra: pip install 'fdd[dask]'")
    orch = OrchestrationConfig(task_runner="dask", runner_address="tcp://10.0.0.5:8786")
    runner = make_task_runner(orch)
    assert runner.address == "tcp://10.0.0.5:8786"
    local = make_task_runner(OrchestrationConfig(task_runner="dask", max_workers=3))
    assert local.address is None
    assert local.cluster_kwargs["n_workers"] == 3
    assert local.cluster_kwargs["threads_per_worker"] == 1


def test_missing_extra_names_the_pip_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "prefect_ray", None)  # import fails as if not installed
    with pytest.raises(TaskRunnerUnavailable, match=r"pip install 'fdd\[ray\]'"):
        make_task_runner(OrchestrationConfig(task_runner="ray"))


def test_ray_runner_uses_given_address_or_a_local_instance_of_max_workers_cpus():
    pytest.importorskip("prefect_ray", reason="needs the ray extra: pip install 'fdd[ray]'")
    remote = make_task_runner(OrchestrationConfig(task_runner="ray", runner_address="ray://h:1"))
    assert remote.address == "ray://h:1"
    local = make_task_runner(OrchestrationConfig(task_runner="ray", max_workers=3))
    assert local.address is None and local.init_kwargs["num_cpus"] == 3


def test_only_gpu_tagged_shards_ask_ray_for_a_gpu():
    from fdd_core.tags import GPU_TAG
    from flows.runners import ray_remote_options

    assert ray_remote_options({GPU_TAG, "fdd"}) == {"num_gpus": 1}
    assert ray_remote_options({"fdd"}) == {} and ray_remote_options(()) == {}


@task
def _remote_options_seen() -> dict:
    return {}


@flow
def _options_flow() -> dict:
    """What shard_resources builds for a GPU-tagged and an untagged task, under this flow's
    runner, as prefect_ray's submit would read it (RemoteOptionsContext)."""
    from fdd_core.tags import GPU_TAG
    from flows.runners import shard_resources

    seen = {}
    for name, fn in (("gpu", _remote_options_seen.with_options(tags={GPU_TAG})),
                     ("cpu", _remote_options_seen)):  # fmt: skip
        with shard_resources(fn) as opts:
            try:
                from prefect_ray.context import RemoteOptionsContext

                current = dict(RemoteOptionsContext.get().current_remote_options)
            except ImportError:
                current = None
            seen[name] = (opts, current)
    return seen


@pytest.mark.slow
def test_ray_local_instance_matches_thread_runner_and_gpu_shards_ask_for_a_gpu():
    """A local Ray instance (started by the runner, 2 CPUs) runs the mapped shards in Ray's
    worker processes with the thread runner's results; under it a GPU-tagged shard is
    submitted with num_gpus=1 (checked on the options built: CI has no GPU), an untagged one
    with none, and under the thread runner nothing is added."""
    pytest.importorskip("prefect_ray", reason="needs the ray extra: pip install 'fdd[ray]'")
    threads = _run(make_task_runner(OrchestrationConfig(task_runner="threads", max_workers=2)))
    ray_runner = make_task_runner(OrchestrationConfig(task_runner="ray", max_workers=2))
    on_ray = _run(ray_runner)
    assert _payload(on_ray) == _payload(threads)
    assert os.getpid() not in {r["pid"] for r in on_ray}  # Ray's worker processes did it

    seen = _options_flow.with_options(
        task_runner=make_task_runner(OrchestrationConfig(task_runner="ray", max_workers=2))
    )()
    assert seen == {"gpu": ({"num_gpus": 1}, {"num_gpus": 1}), "cpu": ({}, {})}
    plain = _options_flow.with_options(task_runner=make_task_runner(OrchestrationConfig()))()
    assert plain == {"gpu": ({}, {}), "cpu": ({}, {})}
