"""What the stage tasks pass each other: content-addressed problem files and shard results.

Small frozen references (never big lists), so Prefect cache keys stay cheap and stable;
the rows live in JSONL files written atomically. `fdd_core.stages` re-exports these names.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from fdd_core.io import atomic_write_json, read_jsonl, write_jsonl
from fdd_core.schemas import Problem, content_hash


class ProblemsRef(BaseModel):
    """A content-addressed JSONL file of problems (what tasks pass instead of lists)."""

    model_config = ConfigDict(frozen=True)
    path: str
    digest: str
    n: int


class ShardResult(BaseModel):
    """What a shard task returns: where its rows are, how many, and its counters."""

    model_config = ConfigDict(frozen=True)
    path: str
    n_rows: int
    stats: dict[str, int]


def problems_digest(problems: Sequence[Problem]) -> str:
    return content_hash(*(p.model_dump_json() for p in problems))


def write_problems(folder: str | Path, name: str, problems: Sequence[Problem]) -> ProblemsRef:
    """Write problems to `<folder>/<name>-<digest>.jsonl` (atomic, idempotent)."""
    digest = problems_digest(problems)
    path = Path(folder) / f"{name}-{digest}.jsonl"
    if not path.is_file():
        write_jsonl(path, (p.model_dump(mode="json") for p in problems))
    return ProblemsRef(path=str(path), digest=digest, n=len(problems))


def read_problems(
    ref: ProblemsRef | str | Path, bounds: tuple[int, int] | None = None
) -> list[Problem]:
    """The problems of a file, or only rows [start, end) of it (`bounds`, a shard's slice).

    A shard reads its own slice: only the rows in `bounds` are decoded and validated, and
    reading stops at `end`. (Decoding the whole file in every shard made a stage cost
    shards x rows, quadratic in the number of problems.)
    """
    path = ref.path if isinstance(ref, ProblemsRef) else str(ref)
    if bounds is None:
        return [Problem.model_validate(row) for row in read_jsonl(path)]
    start, end = bounds
    if start < 0 or end < start:
        raise ValueError(f"bad bounds {bounds!r} for {path}: expected 0 <= start <= end")
    out: list[Problem] = []
    index = 0  # rows seen so far (blank lines are not rows, as in read_jsonl)
    with Path(path).open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if index >= end:
                break
            if not line.strip():
                continue
            if index >= start:
                out.append(Problem.model_validate(_row(line, path, lineno)))
            index += 1
    return out


def _row(line: str, path: str, lineno: int) -> dict:
    """One JSONL line as a dict; errors name the file and line, as `iter_jsonl` does."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
    return row


def shard_bounds(n_items: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, end) of each shard; an empty input has no shards."""
    return [(i, min(i + shard_size, n_items)) for i in range(0, n_items, shard_size)]


def save_shard(path: str | Path, rows: Iterable[BaseModel], stats: dict[str, int]) -> ShardResult:
    """Write a shard's rows and counters atomically (rows first, then the stats file)."""
    rows = list(rows)
    path = Path(path)
    write_jsonl(path, (r.model_dump(mode="json") for r in rows))
    atomic_write_json(path.with_suffix(".stats.json"), stats)
    return ShardResult(path=str(path), n_rows=len(rows), stats=dict(stats))


def merge_stats(parts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: Counter = Counter()
    for part in parts:
        total.update(part)
    return dict(total)
