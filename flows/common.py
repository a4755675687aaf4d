"""Flow helpers: task options from the config, mapped shards with a progress artifact."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed

from fdd_core.backends.registry import backend_spec, device_on_gpu
from fdd_core.config import ModelConfig, RunConfig
from fdd_core.stages import shard_bounds
from fdd_core.tags import GPU_TAG
from flows.runners import shard_resources
from tasks.common import (
    CheckedPickleSerializer,
    result_storage,
    retry_on_transient,
    retry_schedule,
)


def task_options(cfg: RunConfig, run_dir: str, *, retry: bool = False, gpu: bool = False) -> dict:
    """Result storage under the run (so re-runs hit the cache), retries for generation."""
    opts: dict[str, Any] = {
        "result_storage": result_storage(cfg.storage, run_dir),
        # A checksum on every result: an altered file is recomputed, never returned.
        "result_serializer": CheckedPickleSerializer(),
    }
    if retry:
        retries, delays = retry_schedule(cfg.orchestration)
        opts.update(
            retries=retries,
            retry_delay_seconds=delays,
            retry_jitter_factor=0.5,
            retry_condition_fn=retry_on_transient,
        )
    if gpu:
        opts["tags"] = {GPU_TAG}
    return opts


def on_gpu(device: str) -> bool:
    """Whether in-process work with this device setting will hold a GPU here.

    Only such work carries the `gpu` tag: a tagged task asks the server for a concurrency
    slot (a round trip even when no limit exists), which CPU-only runs need not pay.
    """
    return device_on_gpu(device)


def model_on_gpu(mc: ModelConfig) -> bool:
    """Whether work with this model holds a GPU here (the backend table's `uses_gpu`):
    in-process models on a GPU worker do, remote endpoints do not."""
    return backend_spec(mc).uses_gpu(mc)


def teacher_on_gpu(cfg: RunConfig) -> bool:
    """In-process teachers hold a GPU on a GPU worker; remote endpoints do not."""
    return model_on_gpu(cfg.teacher)


def artifact_key(*parts: Any) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(str(p) for p in parts).lower()).strip("-")[:100]


def run_mapped(
    task_fn,
    n_items: int,
    shard_size: int,
    make_kwargs: Callable[[int, tuple[int, int]], dict],
    *,
    label: str,
    progress_key: str,
) -> list:
    """Submit one task per shard, report progress as shards finish, return results in order.

    A failed shard fails the stage only after its own retries; finished shards keep their
    cached results, so a re-run re-does only what is missing.
    """
    bounds = shard_bounds(n_items, shard_size)
    if not bounds:
        return []
    progress = create_progress_artifact(
        0.0, key=progress_key, description=f"{label}: 0/{len(bounds)} shards"
    )
    with shard_resources(task_fn):  # Ray: a GPU-tagged shard asks for its GPU
        futures = [task_fn.submit(**make_kwargs(i, b)) for i, b in enumerate(bounds)]
    last = time.monotonic()
    for done, _ in enumerate(as_completed(futures), start=1):
        # At most one update every couple of seconds (each is an API call), plus the last.
        if done == len(bounds) or time.monotonic() - last > 2.0:
            last = time.monotonic()
            update_progress_artifact(
                progress,
                100.0 * done / len(bounds),
                description=f"{label}: {done}/{len(bounds)} shards",
            )
    return [f.result() for f in futures]


def first_not_none(values: Sequence[Any]) -> Any:
    return next((v for v in values if v is not None), None)


def task_runs_under(flow_run_id) -> tuple[list, list]:
    """The subflow runs of a flow run, and every task run of it and of those subflows
    (the task runs that only stand for a subflow call left out), from the Prefect API."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
            )
        )
        ids = [flow_run_id] + [c.id for c in children]
        runs, offset = [], 0
        while True:  # the API serves at most 200 rows a page
            page = client.read_task_runs(
                task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=ids)),
                limit=200,
                offset=offset,
            )
            runs += page
            offset += len(page)
            if len(page) < 200:
                break
    sub_ids = {c.parent_task_run_id for c in children}
    return children, [r for r in runs if r.id not in sub_ids]
