"""Pick the Prefect task runner that executes mapped shards, from `orchestration` settings.

- "threads" (default): Prefect's `ThreadPoolTaskRunner`, bounded by `max_workers` (Prefect's
  own default is unbounded, which would start one thread per shard).
- "dask": `prefect_dask.DaskTaskRunner`, on an existing scheduler when `runner_address` is
  set (e.g. tcp://scheduler:8786, one worker per GPU node), else on a local cluster of
  `max_workers` single-threaded workers.
- "ray": `prefect_ray.RayTaskRunner`, on `runner_address` (e.g. ray://head:10001) or a local
  Ray instance of `max_workers` CPUs. A shard task tagged `gpu` (its model is on a GPU)
  asks Ray for one GPU (`shard_resources`), so Ray places it on a node that has one free.

The Dask and Ray integrations are optional extras, imported only when asked for; a missing
one fails with the pip command that installs it. A flow picks its runner per run:

    fdd_round.with_options(task_runner=make_task_runner(cfg.orchestration))
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterable, Iterator
from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner

from fdd_core.config import OrchestrationConfig
from fdd_core.tags import GPU_TAG

# What one GPU-tagged shard asks Ray for. One GPU a shard: a generation shard holds one
# model copy (a vLLM teacher over several GPUs asks for them through its own config).
RAY_GPUS_PER_GPU_SHARD = 1

_EXTRAS = {
    "dask": ("prefect_dask", "DaskTaskRunner"),
    "ray": ("prefect_ray", "RayTaskRunner"),
}


class TaskRunnerUnavailable(ImportError):
    """The configured task runner needs an optional package that is not installed."""


def _load_runner_class(kind: str) -> Any:
    module_name, class_name = _EXTRAS[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskRunnerUnavailable(
            f"orchestration.task_runner is '{kind}', which needs the '{module_name}' package "
            f"({exc}). Install it with:  pip install 'fdd[{kind}]'  "
            "(or set orchestration.task_runner: threads)"
        ) from exc
    return getattr(module, class_name)


def _local_dask_kwargs(orch: OrchestrationConfig, processes: bool) -> dict[str, Any]:
    # One thread per worker: shards are the unit of parallelism, and GPU or tokenizer-heavy
    # shards do not share a process well. No dashboard: two rounds on one machine would fight
    # over its fixed port; a cluster that wants one runs its own scheduler (runner_address).
    return {
        "n_workers": orch.max_workers,
        "threads_per_worker": 1,
        "processes": processes,
        "dashboard_address": None,
    }


def make_task_runner(orch: OrchestrationConfig, *, local_processes: bool = True):
    """A Prefect task runner for `orch.task_runner`.

    `local_processes` only matters for a local Dask cluster: worker processes (default,
    real parallelism for CPU-bound shards) or threads in this process (starts faster).
    """
    if orch.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=orch.max_workers)
    runner_cls = _load_runner_class(orch.task_runner)
    if orch.task_runner == "dask":
        if orch.runner_address:
            return runner_cls(address=orch.runner_address)
        return runner_cls(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs=_local_dask_kwargs(orch, local_processes),
        )
    if orch.task_runner == "ray":
        if orch.runner_address:
            return runner_cls(address=orch.runner_address)
        return runner_cls(init_kwargs={"num_cpus": orch.max_workers})
    # OrchestrationConfig's Literal makes this unreachable unless a new kind is added there.
    raise ValueError(
        f"orchestration.task_runner must be one of threads, dask, ray; got {orch.task_runner!r}"
    )


def ray_remote_options(tags: Iterable[str]) -> dict[str, Any]:
    """The `ray.remote` options for a shard task with these tags (empty: Ray's defaults)."""
    return {"num_gpus": RAY_GPUS_PER_GPU_SHARD} if GPU_TAG in set(tags) else {}


@contextlib.contextmanager
def shard_resources(task_fn) -> Iterator[dict[str, Any]]:
    """Around `task_fn.submit(...)`: under a Ray task runner, a GPU-tagged task asks Ray for
    its GPU (prefect_ray's `remote_options`); under any other runner, nothing changes (a
    Prefect server's `gpu` tag concurrency limit applies as always). Yields the options."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    runner = getattr(ctx, "task_runner", None) if ctx is not None else None
    options = ray_remote_options(getattr(task_fn, "tags", ()) or ())
    if not options or type(runner).__module__.split(".")[0] != "prefect_ray":
        yield {}
        return
    from prefect_ray.context import remote_options

    with remote_options(**options):
        yield options
