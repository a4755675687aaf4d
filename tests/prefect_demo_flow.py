"""A small stand-in for the FDD flow, for exercising deployments against a real server.

It has the shape that matters to orchestration: the validated `RunConfig` as its one
parameter, a task mapped over shards, a task cached on INPUTS + TASK_SOURCE with results
persisted under the run folder (so a second run in a new process is served from the cache),
and table + markdown artifacts like the round report.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE

from fdd_core.config import RunConfig
from fdd_core.schemas import content_hash, problem_id

DEMO_FLOW_NAME = "fdd-demo"
ARTIFACT_KEY = "fdd-demo-round"


def _questions(n: int) -> list[str]:
    return [f"Ann has {i} pens and buys {i + 2} more. How many pens now?" for i in range(n)]


@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def hash_shard(index: int, questions: list[str], config_hash: str) -> dict:
    """Stable ids for one shard (the cache key covers the shard and the config)."""
    return {"index": index, "ids": [problem_id(q) for q in questions]}


@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True, tags=["gpu"])
def summarize(shards: list[dict], config_hash: str) -> dict:
    """Stands in for a GPU stage: carries the `gpu` tag the concurrency limit governs."""
    ids = [i for s in shards for i in s["ids"]]
    return {"n": len(ids), "digest": content_hash(*ids)}


@flow(name=DEMO_FLOW_NAME)
def fdd_demo(config: RunConfig) -> dict:
    run_dir = Path(config.storage.root).resolve() / (config.storage.run_name or "demo")
    # A Path, not an unsaved LocalFileSystem block: Prefect refuses unsaved blocks as task
    # result storage ("must be persisted server-side").
    storage = run_dir / "prefect-results"
    questions = _questions(4 * config.orchestration.shard_size)
    size = config.orchestration.shard_size
    shards = [questions[i : i + size] for i in range(0, len(questions), size)]
    cfg_hash = config.config_hash()
    mapped = hash_shard.with_options(result_storage=storage).map(
        range(len(shards)), shards, config_hash=cfg_hash
    )
    summary = summarize.with_options(result_storage=storage)([m.result() for m in mapped], cfg_hash)
    create_table_artifact(
        key=ARTIFACT_KEY,
        table=[{"shards": len(shards), "problems": summary["n"], "digest": summary["digest"]}],
        description="demo round table",
    )
    create_markdown_artifact(
        key=f"{ARTIFACT_KEY}-summary",
        markdown=f"# Demo round\n\n{summary['n']} problems in {len(shards)} shards.",
    )
    return summary
