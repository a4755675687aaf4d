"""What a round and a run report: result records, tables, markdown, and run folders.

A run folder holds `run.json` (config, status, one entry per finished round),
`round-<r>/summary.json`, `datasets/<version>/` and `report.md`. `fdd runs list` and the
Prefect artifacts are both built from these records.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from fdd_core.config import RunConfig
from fdd_core.io import atomic_write_json, atomic_write_text
from fdd_core.schemas import DatasetRef, ModelRef


class RoundResult(BaseModel):
    """Everything one round produced and counted."""

    round: int
    dataset: DatasetRef
    model: ModelRef | None = None
    added: int = 0
    counts_by_origin: dict[str, int] = Field(default_factory=dict)
    stats: dict[str, dict[str, int]] = Field(default_factory=dict)
    dropped: dict[str, int] = Field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Per stage ("rationales", "synthesize", "label"): requests, prompt_tokens,
    # completion_tokens, cache_hits (request-cache hits). Prompts, not HTTP retries.
    teacher_usage: dict[str, dict[str, int]] = Field(default_factory=dict)
    # Added for the run report (fdd_core.report); optional so older records still load.
    base_metrics: dict[str, dict[str, Any]] = Field(default_factory=dict)
    wall_time_s: dict[str, float] = Field(default_factory=dict)
    gpu_stages: list[str] = Field(default_factory=list)
    # Truth-based measurements a controlled run adds afterwards (fdd lab: label precision,
    # contamination recall; see fdd_core/world/lab.py). Empty for real runs.
    lab_metrics: dict[str, float] = Field(default_factory=dict)

    def accuracy(self) -> dict[str, float]:
        return {k: float(v.get("accuracy", 0.0)) for k, v in self.metrics.items()}

    def row(self) -> dict[str, Any]:
        """One flat row for the per-round table."""
        s = self.stats
        row: dict[str, Any] = {
            "round": self.round,
            "dataset": self.dataset.version_id[:12],
            "examples": self.dataset.n_rows,
            "added": self.added,
        }
        for origin in ("original", "complex", "similar"):
            row[origin] = self.counts_by_origin.get(origin, 0)
        grade = s.get("grade", {})
        row["easy"] = grade.get("easy", "")
        row["hard"] = grade.get("hard", "")
        row["synthesized"] = s.get("synthesize", {}).get("generated", "")
        row["dropped"] = sum(self.dropped.values()) if self.dropped else ""
        label = s.get("label", {})
        row["accepted"] = label.get("accepted", "") if label else ""
        for name, acc in self.accuracy().items():
            row[f"acc:{name}"] = round(acc, 4)
        for key in ("label_precision", "contamination_recall"):
            if key in self.lab_metrics:
                row[key] = round(self.lab_metrics[key], 4)
        return row


class DistillResult(BaseModel):
    run_dir: str
    rounds: list[RoundResult]
    stopped_early: bool = False


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def table_columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        for key in row:
            if key not in cols:
                cols.append(key)
    return cols


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_no rows_\n"
    cols = table_columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def text_table(rows: list[dict[str, Any]]) -> str:
    """A plain aligned table for the terminal."""
    if not rows:
        return "(no rounds)\n"
    cols = table_columns(rows)
    cells = [[_cell(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(cols)]
    out = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    out.append("  ".join("-" * w for w in widths))
    out.extend("  ".join(v.ljust(w) for v, w in zip(line, widths)) for line in cells)
    return "\n".join(out) + "\n"


def round_markdown(result: RoundResult) -> str:
    """The per-round summary published as a Prefect markdown artifact."""
    lines = [f"# FDD round {result.round}", ""]
    lines.append(
        f"Dataset version `{result.dataset.version_id}` ({result.dataset.n_rows} examples, "
        f"+{result.added} this round) at `{result.dataset.path}`."
    )
    if result.model is not None:
        kind = "LoRA adapter" if result.model.adapter else "full checkpoint"
        lines.append(f"Student ({kind}) at `{result.model.path}`.")
    else:
        lines.append("No student was trained (empty dataset): the base model stands in.")
    lines += ["", "## Table", "", markdown_table([result.row()])]
    for stage, counts in result.stats.items():
        if counts:
            lines += [f"## {stage}", "", markdown_table([counts])]
    if result.dropped:
        lines += ["## Dropped by the filter", "", markdown_table([result.dropped])]
    if result.metrics:
        bench_rows = [{"benchmark": k, **v} for k, v in result.metrics.items()]
        lines += ["## Benchmarks", "", markdown_table(bench_rows)]
    return "\n".join(lines)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def write_run_record(
    run_dir: str | Path,
    cfg: RunConfig,
    *,
    status: str,
    rounds: list[RoundResult],
    error: str | None = None,
) -> Path:
    """Keep `run.json` current: written at start, after each round and at the end."""
    path = Path(run_dir) / "run.json"
    previous: dict[str, Any] = {}
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            previous = {}
    record = {
        "run_dir": str(Path(run_dir).resolve()),
        "status": status,
        "created_at": previous.get("created_at", now_iso()),
        "updated_at": now_iso(),
        "config_hash": cfg.config_hash(),
        "teacher": cfg.teacher.model,
        "student": cfg.student.model,
        "n_rounds": cfg.rounds.n_rounds,
        "rounds": [r.model_dump(mode="json") for r in rounds],
        "error": error,
        "config": cfg.model_dump(mode="json"),
    }
    return atomic_write_json(path, record)


def rounds_markdown(rounds: list[RoundResult]) -> str:
    """The per-round table and each round's summary (the counters of every stage)."""
    body = [markdown_table([r.row() for r in rounds])]
    for r in rounds:
        body += ["", round_markdown(r)]
    return "\n".join(body)


def write_report(run_dir: str | Path, rounds: list[RoundResult]) -> Path:
    """The counters-only `report.md` (the full report is fdd_core.report.write_run_report)."""
    body = "# FDD run report\n\n" + rounds_markdown(rounds)
    return atomic_write_text(Path(run_dir) / "report.md", body)


def list_runs(root: str | Path) -> list[dict[str, Any]]:
    """Run records under a storage root, newest first."""
    runs = []
    for path in Path(root).glob("*/run.json"):
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            runs.append({"run_dir": str(path.parent), "status": "unreadable"})
    return sorted(runs, key=lambda r: r.get("updated_at", ""), reverse=True)
