"""Run records the stages write as they run, for the run report (fdd_core.report).

Layout under the run folder (every file written atomically, fdd_core.io)::

    records/
      reference_leakage.jsonl        the original training questions' leakage scores
      round_<r>/
        funnel.json                  the round's funnel: ordered [step, count] pairs
        timings.jsonl                one line per execution of the round: wall time per stage
        candidates.jsonl             every generated question: parent, filter verdict, leakage
        verdicts/shard-<i>.jsonl     every labelled question: programs, vote, accepted/reason

Other records the report reads where the stages already put them: `round-<r>/summary.json`
(the RoundResult: counters per stage, teacher usage when recorded), the student's
`meta.json` (loss per step) and `round-<r>/eval/<benchmark>/predictions.jsonl` (the
student's program for every benchmark problem).

Records are written when a stage computes; a cached stage does not write them again, so a
re-run keeps the first run's records (timings are the exception: each execution of a round
appends its own line, cache hits included, and says so).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fdd_core.io import atomic_write_json, read_jsonl, write_jsonl

RECORDS_DIR = "records"
REFERENCE_LEAKAGE = "reference_leakage.jsonl"


def records_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / RECORDS_DIR


def round_records_dir(run_dir: str | Path, round_index: int) -> Path:
    return records_dir(run_dir) / f"round_{round_index}"


# --------------------------------------------------------------------------- funnel


def funnel_steps(
    round_index: int,
    stats: dict[str, dict[str, int]],
    dropped: dict[str, int],
    added: int,
) -> list[dict[str, Any]]:
    """The round's funnel as ordered {step, count} rows, from the stages' own counters.

    Round 0: problems -> completions -> programs parsed -> executed -> verified -> problems
    with >= 1 rationale. Later rounds: pool -> easy / hard -> parents -> candidates ->
    dropped per reason -> labelled -> accepted -> added.
    """
    steps: list[tuple[str, int]] = []
    if round_index == 0:
        s = stats.get("rationales", {})
        steps = [
            ("problems", s.get("problems", 0)),
            ("teacher completions", s.get("completions", 0)),
            ("programs parsed", s.get("programs", 0)),
            ("executed ok", s.get("exec:ok", 0)),
            ("verified", s.get("verified", 0)),
            ("problems with a rationale", s.get("problems_with_rationale", 0)),
        ]
    else:
        g, syn = stats.get("grade", {}), stats.get("synthesize", {})
        flt, lab = stats.get("filter", {}), stats.get("label", {})
        steps = [
            ("pool", g.get("problems", 0)),
            ("easy", g.get("easy", 0)),
            ("hard", g.get("hard", 0)),
            ("parents", syn.get("parents", 0)),
            ("candidates", flt.get("candidates", syn.get("generated", 0))),
        ]
        steps += [(f"dropped: {reason}", n) for reason, n in dropped.items() if n]
        steps += [
            ("labelled", lab.get("problems", flt.get("kept", 0))),
            ("rejected: no answer", lab.get("rejected_no_answer", 0)),
            ("rejected: low agreement", lab.get("rejected_low_agreement", 0)),
            ("accepted", lab.get("accepted", 0)),
        ]
    steps.append(("examples added", added))
    return [{"step": name, "count": int(n)} for name, n in steps]


def write_funnel(run_dir: str | Path, round_index: int, steps: list[dict[str, Any]]) -> Path:
    # A list of [step, count] pairs keeps the order (objects are written with sorted keys).
    pairs = [[s["step"], s["count"]] for s in steps]
    return atomic_write_json(round_records_dir(run_dir, round_index) / "funnel.json", pairs)


# --------------------------------------------------------------------------- timings


class StageClock:
    """Wall time per stage of one execution of a round: `lap(stage)` after each stage."""

    def __init__(self) -> None:
        self.started_at = time.time()
        self._last = time.perf_counter()
        self.stages: dict[str, float] = {}

    def lap(self, stage: str) -> float:
        now = time.perf_counter()
        elapsed = now - self._last
        self._last = now
        self.stages[stage] = round(self.stages.get(stage, 0.0) + elapsed, 3)
        return elapsed


def append_timings(
    run_dir: str | Path,
    round_index: int,
    clock: StageClock,
    *,
    gpu_stages: Sequence[str] = (),
    gpus: int = 1,
) -> Path:
    """Add this execution's line to `timings.jsonl` (the whole file is rewritten atomically)."""
    path = round_records_dir(run_dir, round_index) / "timings.jsonl"
    rows = read_jsonl(path) if path.is_file() else []
    rows.append(
        {
            "started_at": round(clock.started_at, 3),
            # Pairs, in the order the stages ran (JSON objects are written with sorted keys).
            "stages": [[stage, secs] for stage, secs in clock.stages.items()],
            "gpu_stages": sorted(s for s in gpu_stages if s in clock.stages),
            "gpus": gpus,
        }
    )
    return write_jsonl(path, rows)


# --------------------------------------------------------------------------- candidates


def write_candidates(run_dir: str | Path, round_index: int, rows: list[dict]) -> Path:
    """Every generated question of the round with its filter verdict and leakage scores."""
    return write_jsonl(round_records_dir(run_dir, round_index) / "candidates.jsonl", rows)


def write_label_verdicts(
    run_dir: str | Path, round_index: int, shard_index: int, rows: list[dict]
) -> Path:
    path = round_records_dir(run_dir, round_index) / "verdicts" / f"shard-{shard_index:05d}.jsonl"
    return write_jsonl(path, rows)


def write_reference_leakage(run_dir: str | Path, rows: list[dict]) -> Path:
    return write_jsonl(records_dir(run_dir) / REFERENCE_LEAKAGE, rows)


# --------------------------------------------------------------------------- reading


def _read_optional_jsonl(path: Path) -> list[dict] | None:
    return read_jsonl(path) if path.is_file() else None


def read_round_records(run_dir: str | Path, round_index: int) -> dict[str, Any]:
    """What is recorded for one round; a missing record is None (an older run)."""
    folder = round_records_dir(run_dir, round_index)
    funnel = folder / "funnel.json"
    verdict_files = sorted((folder / "verdicts").glob("shard-*.jsonl"))
    return {
        "funnel": (
            [{"step": s, "count": n} for s, n in json.loads(funnel.read_text())]
            if funnel.is_file()
            else None
        ),
        "timings": _read_optional_jsonl(folder / "timings.jsonl"),
        "candidates": _read_optional_jsonl(folder / "candidates.jsonl"),
        "verdicts": [r for f in verdict_files for r in read_jsonl(f)] if verdict_files else None,
    }


def read_reference_leakage(run_dir: str | Path) -> list[dict] | None:
    return _read_optional_jsonl(records_dir(run_dir) / REFERENCE_LEAKAGE)


__all__ = [
    "RECORDS_DIR",
    "StageClock",
    "append_timings",
    "funnel_steps",
    "read_reference_leakage",
    "read_round_records",
    "records_dir",
    "round_records_dir",
    "write_candidates",
    "write_funnel",
    "write_label_verdicts",
    "write_reference_leakage",
]
