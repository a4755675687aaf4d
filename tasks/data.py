"""Load the original training problems into a content-addressed problems file."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from fdd_core.config import DataConfig
from fdd_core.data import load_source
from fdd_core.stages import ProblemsRef, write_problems
from tasks.common import CACHE_POLICY


@task(
    name="load-problems",
    task_run_name="load-problems",
    cache_policy=CACHE_POLICY,
    persist_result=True,
)
def load_problems(
    data: DataConfig, run_dir: str, data_fingerprint: str, code_version: str
) -> ProblemsRef:
    """Read every configured source; fail on bad rows unless data.strict is false."""
    problems, seen = [], set()
    for source in data.train:
        result = load_source(source, strict=data.strict)
        for p in result.problems[: source.limit] if source.limit else result.problems:
            if p.id not in seen:  # the same question in two sources is one problem
                seen.add(p.id)
                problems.append(p)
    if not problems:
        raise ValueError("the configured training sources hold no problems")
    return write_problems(Path(run_dir) / "problems", "original", problems)
