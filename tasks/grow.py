"""D_r = D_{r-1} + the round's accepted examples, as a new immutable dataset version."""

from __future__ import annotations

from prefect import task

from fdd_core.io import read_jsonl
from fdd_core.schemas import DatasetRef, Example
from fdd_core.stages import ShardResult, merge_examples
from fdd_core.store import read_examples, write_version
from tasks.common import CACHE_POLICY


@task(
    name="grow-dataset",
    task_run_name="grow-r{round_index}",
    cache_policy=CACHE_POLICY,
    persist_result=True,
)
def grow_dataset(
    shards: list[ShardResult],
    parent: DatasetRef | None,
    store_root: str,
    round_index: int,
    config_hash: str,
    code_version: str,
) -> DatasetRef:
    """Write the merged examples as a new version (atomic; same content, same version)."""
    new = [Example.model_validate(r) for shard in shards for r in read_jsonl(shard.path)]
    merged = merge_examples(read_examples(parent) if parent else [], new)
    return write_version(
        store_root,
        merged,
        parent=parent,
        round=round_index,
        config_hash=config_hash,
        code_version=code_version,
        extra={"added": len(merged) - (parent.n_rows if parent else 0)},
    )
