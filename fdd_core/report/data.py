"""Read what a run folder recorded into one `RunData`, and turn it into the report's tables.

Every table is a list of flat dict rows computed from the records only (fdd_core.records,
run.json, dataset versions, student meta.json, benchmark predictions); nothing is
re-run. A record an older run lacks becomes an entry of `RunData.missing`, and its section
says so.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fdd_core.io import read_jsonl
from fdd_core.records import read_reference_leakage, read_round_records

ORIGINS = ("original", "complex", "similar")
CONTAMINATION = ("contaminated_ngram", "contaminated_near")


@dataclass
class RoundData:
    index: int
    result: dict[str, Any]  # RoundResult as recorded (raw: keeps fields other issues add)
    records: dict[str, Any]
    meta: dict[str, Any] | None  # the student's meta.json
    predictions: dict[str, list[dict]]  # benchmark -> rows
    examples: list[dict] | None  # the round's dataset version, as rows


@dataclass
class RunData:
    run_dir: Path
    record: dict[str, Any]
    rounds: list[RoundData]
    reference_leakage: list[dict] | None
    missing: list[str] = field(default_factory=list)

    @property
    def config(self) -> dict[str, Any]:
        return self.record.get("config") or {}


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _examples(result: dict) -> list[dict] | None:
    path = Path((result.get("dataset") or {}).get("path", "")) / "examples.parquet"
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def _predictions(run_dir: Path, r: int, folder: str = "eval") -> dict[str, list[dict]]:
    out = {}
    for path in sorted((run_dir / f"round-{r}" / folder).glob("*/predictions.jsonl")):
        out[path.parent.name] = read_jsonl(path)
    return out


def load_run(run_dir: str | Path) -> RunData:
    """Everything the report needs from a run folder (finished or still running)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no such directory)")
    record = _json(run_dir / "run.json")
    missing: list[str] = []
    if record is None:
        missing.append("run.json (config and round results): rounds read from round-*/summary")
        record = {"rounds": []}
        for p in sorted(run_dir.glob("round-*/summary.json"), key=lambda p: int(p.parent.name[6:])):
            record["rounds"].append(_json(p) or {})
    results = [r for r in record.get("rounds", []) if r]
    if not results:
        raise FileNotFoundError(f"{run_dir} holds no finished round (no run.json rounds)")
    rounds = []
    for res in results:
        r = int(res["round"])
        model = res.get("model") or {}
        meta = _json(Path(model["path"]) / "meta.json") if model.get("path") else None
        rounds.append(
            RoundData(
                index=r,
                result=res,
                records=read_round_records(run_dir, r),
                meta=meta,
                predictions=_predictions(run_dir, r),
                examples=_examples(res),
            )
        )
    data = RunData(run_dir, record, rounds, read_reference_leakage(run_dir), missing)
    for rd in rounds:
        names = {"funnel": "funnel", "timings": "stage timings"}
        if rd.index > 0:
            names |= {"candidates": "candidate verdicts and leakage", "verdicts": "label votes"}
        for key, what in names.items():
            if rd.records.get(key) is None:
                missing.append(f"round {rd.index}: {what}")
        if rd.meta is not None and "loss_per_step" not in rd.meta:
            missing.append(f"round {rd.index}: loss per step (meta.json has a summary only)")
        if rd.examples is None:
            missing.append(f"round {rd.index}: dataset version files")
    if data.reference_leakage is None:
        missing.append("leakage scores of the original training questions")
    if not any("teacher_usage" in rd.result for rd in rounds):
        missing.append("teacher usage (requests, tokens, cache hits): not recorded")
    return data


# --------------------------------------------------------------------------- tables


def accuracy_rows(data: RunData) -> list[dict[str, Any]]:
    rows = []
    for rd in data.rounds:
        if rd.index == 0:
            for bench, m in (rd.result.get("base_metrics") or {}).items():
                rows.append(_acc_row("base", bench, m))
        for bench, m in (rd.result.get("metrics") or {}).items():
            rows.append(_acc_row(rd.index, bench, m))
    return rows


def _acc_row(r: int | str, bench: str, m: dict) -> dict[str, Any]:
    return {
        "round": r,
        "benchmark": Path(bench).stem if "/" in bench else bench,
        "accuracy": float(m.get("accuracy", 0.0)),
        "correct": m.get("correct", ""),
        "n": m.get("n", ""),
    }


def funnel_rows(rd: RoundData) -> list[dict[str, Any]] | None:
    return rd.records.get("funnel")


def growth_rows(data: RunData) -> list[dict[str, Any]]:
    """Examples added per round by origin (differences of the versions' counts)."""
    rows, previous = [], dict.fromkeys(ORIGINS, 0)
    for rd in data.rounds:
        counts = rd.result.get("counts_by_origin") or {}
        row: dict[str, Any] = {"round": rd.index}
        for o in ORIGINS:
            row[f"added {o}"] = int(counts.get(o, 0)) - previous[o]
            previous[o] = int(counts.get(o, 0))
        row["total examples"] = (rd.result.get("dataset") or {}).get("n_rows", "")
        rows.append(row)
    return rows


def program_steps(program: str) -> int:
    """Difficulty proxy: statements of the program (non-empty, non-comment lines)."""
    return sum(1 for ln in program.splitlines() if ln.strip() and not ln.strip().startswith("#"))


def difficulty_rows(data: RunData) -> list[dict[str, Any]]:
    """Program steps of the examples each round added, per origin."""
    last = next((rd for rd in reversed(data.rounds) if rd.examples is not None), None)
    if last is None:
        return []
    groups: dict[tuple[int, str], list[int]] = {}
    for e in last.examples or []:
        groups.setdefault((int(e["round"]), e["origin"]), []).append(program_steps(e["program"]))
    return [
        {
            "round": r,
            "origin": o,
            "examples": len(v),
            "mean steps": round(statistics.fmean(v), 3),
            "median steps": statistics.median(v),
            "max steps": max(v),
        }
        for (r, o), v in sorted(groups.items())
    ]


def generated_leakage(data: RunData) -> list[dict]:
    """Every generated question's record (all rounds), with its round."""
    out = []
    for rd in data.rounds:
        for row in rd.records.get("candidates") or []:
            out.append({**row, "round": rd.index})
    return out


def leakage_values(rows: list[dict], bench: str, measure: str) -> list[float]:
    return [float(r["leakage"][bench][measure]) for r in rows if bench in (r.get("leakage") or {})]


def leakage_benchmarks(data: RunData) -> list[str]:
    names: list[str] = []
    for row in generated_leakage(data) + (data.reference_leakage or [])[:1]:
        for b in row.get("leakage") or {}:
            if b not in names:
                names.append(b)
    return names


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "mean": "", "p95": "", "max": ""}
    s = sorted(values)
    return {
        "n": len(s),
        "mean": round(statistics.fmean(s), 4),
        "p95": round(s[min(len(s) - 1, int(0.95 * len(s)))], 4),
        "max": round(s[-1], 4),
    }


def leakage_rows(data: RunData) -> list[dict[str, Any]]:
    """Per benchmark and measure: generated vs original questions (n, mean, p95, max)."""
    gen, ref = generated_leakage(data), data.reference_leakage or []
    rows = []
    for bench in leakage_benchmarks(data):
        for measure in ("ngram", "jaccard"):
            for who, src in (("generated", gen), ("original (reference)", ref)):
                rows.append(
                    {
                        "benchmark": _short(bench),
                        "measure": measure,
                        "questions": who,
                        **_stats(leakage_values(src, bench, measure)),
                    }
                )
    return rows


def contamination_rows(data: RunData) -> list[dict[str, Any]]:
    """Per round: candidates and how many the filter dropped as contaminated (by measure)."""
    f = data.config.get("filtering") or {}
    rows = []
    for rd in data.rounds[1:]:
        dropped = rd.result.get("dropped") or {}
        rows.append(
            {
                "round": rd.index,
                "candidates": (rd.result.get("stats") or {}).get("filter", {}).get("candidates", 0),
                "contaminated_ngram": dropped.get("contaminated_ngram", 0),
                "contaminated_near": dropped.get("contaminated_near", 0),
                "ngram rule": f"any shared {f.get('ngram_n', '?')}-gram",
                "near rule": f"est. Jaccard >= {f.get('near_dup_threshold', '?')}",
            }
        )
    return rows


def paths_rows(data: RunData) -> list[dict[str, Any]]:
    """Round 0: how many problems got 0, 1, ..., k verified programs (reasoning paths)."""
    r0 = data.rounds[0]
    if r0.index != 0 or r0.examples is None:
        return []
    per = Counter(e["problem_id"] for e in r0.examples if e["origin"] == "original")
    n_problems = (r0.result.get("stats") or {}).get("rationales", {}).get("problems", len(per))
    hist = Counter(per.values())
    hist[0] = n_problems - len(per)
    return [{"verified programs": k, "problems": hist[k]} for k in sorted(hist)]


def timing_rows(data: RunData) -> list[dict[str, Any]]:
    """Wall time per stage, from the first recorded execution of each round."""
    rows = []
    for rd in data.rounds:
        execs = rd.records.get("timings") or []
        if not execs:
            continue
        first = execs[0]
        gpu = set(first.get("gpu_stages", []))
        stages = first.get("stages") or list((first.get("wall_time_s") or {}).items())
        for stage, secs in stages:
            rows.append(
                {
                    "round": rd.index,
                    "stage": stage,
                    "wall s": round(float(secs), 2),
                    "gpu": "yes" if stage in gpu else "",
                    "gpu s": round(float(secs) * first.get("gpus", 1), 2) if stage in gpu else 0,
                    "executions": len(execs),
                }
            )
    return rows


USAGE_KEYS = ("requests", "prompt_tokens", "completion_tokens", "cache_hits")


def usage_rows(data: RunData) -> list[dict[str, Any]] | None:
    """Teacher usage per round and stage (RoundResult.teacher_usage), None when unrecorded."""
    if not any("teacher_usage" in rd.result for rd in data.rounds):
        return None
    rows = []
    for rd in data.rounds:
        for stage, u in (rd.result.get("teacher_usage") or {}).items():
            rows.append({"round": rd.index, "stage": stage, **{k: u.get(k, 0) for k in USAGE_KEYS}})
    return rows


def tokens_per_point_rows(data: RunData) -> list[dict[str, Any]]:
    """Teacher tokens spent after round 0 per accuracy point gained over round 0."""
    usage = usage_rows(data)
    if usage is None or len(data.rounds) < 2:
        return []
    later = sum(r["prompt_tokens"] + r["completion_tokens"] for r in usage if r["round"] != 0)
    first, last = data.rounds[0].result.get("metrics") or {}, data.rounds[-1].result.get("metrics")
    rows = []
    for bench, m in (last or {}).items():
        gain = 100 * (float(m.get("accuracy", 0)) - float(first.get(bench, {}).get("accuracy", 0)))
        rows.append(
            {
                "benchmark": _short(bench),
                "teacher tokens after round 0": later,
                "points gained": round(gain, 2),
                "tokens per point": round(later / gain, 1) if gain > 0 else "no gain",
            }
        )
    return rows


def loss_curves(data: RunData) -> dict[int, list[float]]:
    out = {}
    for rd in data.rounds:
        if rd.meta is None:
            continue
        if "loss_per_step" in rd.meta:
            out[rd.index] = [float(x) for x in rd.meta["loss_per_step"]]
    return out


def example_sets(data: RunData, per_kind: int = 3) -> list[dict[str, Any]]:
    """Accepted and rejected new problems per origin, with parent, programs, vote, reason."""
    out = []
    for rd in data.rounds[1:]:
        parents = {
            c["problem_id"]: c.get("parent_question") for c in rd.records["candidates"] or []
        }
        verdicts = rd.records.get("verdicts") or []
        dropped = [c for c in rd.records.get("candidates") or [] if not c["kept"]]
        for origin in ("complex", "similar"):
            acc = [v for v in verdicts if v["origin"] == origin and v["accepted"]]
            rej = [v for v in verdicts if v["origin"] == origin and not v["accepted"]]
            rej += [
                {**c, "programs": [], "vote_answer": None, "agreement": None, "stage": "filter"}
                for c in dropped
                if c["origin"] == origin
            ]
            for kind, rows in (("accepted", acc), ("rejected", rej)):
                for v in rows[:per_kind]:
                    out.append(
                        {
                            "round": rd.index,
                            "origin": origin,
                            "verdict": kind,
                            "reason": v.get("reason"),
                            "question": v["question"],
                            "parent": v.get("parent_question") or parents.get(v["problem_id"]),
                            "programs": v.get("programs", []),
                            "vote_answer": v.get("vote_answer"),
                            "agreement": v.get("agreement"),
                            "total": len(rows),
                        }
                    )
    return out


def student_examples(data: RunData, per_kind: int = 2) -> list[dict[str, Any]]:
    """The last round's student on a few benchmark problems it got right and wrong."""
    last = data.rounds[-1]
    out = []
    for bench, rows in last.predictions.items():
        for kind, pick in (("right", True), ("wrong", False)):
            for row in [r for r in rows if (r.get("status") == "correct") == pick][:per_kind]:
                out.append({"benchmark": _short(bench), "kind": kind, **row})
    return out


def _short(bench: str) -> str:
    return Path(bench).stem if "/" in bench else bench


__all__ = ["RoundData", "RunData", "load_run"]
