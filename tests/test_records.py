"""Run records (fdd_core.records): funnel from the stage counters, timings, round trip."""

from __future__ import annotations

from fdd_core.records import (
    StageClock,
    append_timings,
    funnel_steps,
    read_round_records,
    write_funnel,
)


def test_round_0_funnel_follows_the_rationale_counters():
    stats = {
        "rationales": {
            "problems": 10,
            "completions": 40,
            "programs": 35,
            "exec:ok": 30,
            "verified": 12,
            "problems_with_rationale": 8,
        }
    }
    steps = funnel_steps(0, stats, {}, 12)
    assert [(s["step"], s["count"]) for s in steps] == [
        ("problems", 10),
        ("teacher completions", 40),
        ("programs parsed", 35),
        ("executed ok", 30),
        ("verified", 12),
        ("problems with a rationale", 8),
        ("examples added", 12),
    ]


def test_feedback_funnel_lists_drops_by_reason_in_order(tmp_path):
    stats = {
        "grade": {"problems": 20, "easy": 12, "hard": 8},
        "synthesize": {"parents": 20, "generated": 30},
        "filter": {"candidates": 30, "kept": 25},
        "label": {"problems": 25, "accepted": 20, "rejected_no_answer": 2},
    }
    dropped = {"malformed": 0, "duplicate_near": 3, "contaminated_ngram": 2}
    steps = funnel_steps(1, stats, dropped, 31)
    names = [s["step"] for s in steps]
    assert names[:5] == ["pool", "easy", "hard", "parents", "candidates"]
    assert "dropped: malformed" not in names  # zero drops are not steps
    assert names.index("dropped: duplicate_near") < names.index("labelled")
    write_funnel(tmp_path, 1, steps)
    assert read_round_records(tmp_path, 1)["funnel"] == steps  # order survives JSON


def test_timings_append_one_line_per_execution_in_stage_order(tmp_path):
    for _ in range(2):
        clock = StageClock()
        for stage in ("synthesize", "filter", "label"):
            clock.lap(stage)
        append_timings(tmp_path, 2, clock, gpu_stages=["label", "train"], gpus=2)
    rec = read_round_records(tmp_path, 2)
    assert len(rec["timings"]) == 2
    first = rec["timings"][0]
    assert [s for s, _ in first["stages"]] == ["synthesize", "filter", "label"]
    assert first["gpu_stages"] == ["label"] and first["gpus"] == 2
    assert rec["candidates"] is None and rec["verdicts"] is None  # not written: None


def _round(r: int, acc: float, usage: dict | None) -> dict:
    out = {
        "round": r,
        "dataset": {"path": "/nonexistent", "version_id": f"v{r}", "n_rows": 10 * (r + 1)},
        "added": 10,
        "counts_by_origin": {"original": 10, "similar": 10 * r},
        "metrics": {"gsm8k": {"accuracy": acc, "correct": int(acc * 100), "n": 100}},
    }
    if usage is not None:
        out["teacher_usage"] = usage
    return out


def test_report_reads_teacher_usage_when_recorded_and_says_not_recorded_otherwise(tmp_path):
    """The contract with the experiments issue: RoundResult.teacher_usage per stage."""
    import json

    from fdd_core.report import build_report

    usage0 = {"rationales": {"requests": 5, "prompt_tokens": 1000, "completion_tokens": 500}}
    usage1 = {
        "synthesize": {"requests": 2, "prompt_tokens": 300, "completion_tokens": 200},
        "label": {"requests": 4, "prompt_tokens": 600, "completion_tokens": 400, "cache_hits": 1},
    }
    with_usage = tmp_path / "with"
    with_usage.mkdir()
    rounds = [_round(0, 0.20, usage0), _round(1, 0.25, usage1)]
    (with_usage / "run.json").write_text(json.dumps({"status": "completed", "rounds": rounds}))
    tables = build_report(with_usage).tables()
    assert [
        (r["round"], r["stage"], r["requests"], r["cache_hits"]) for r in tables["teacher_usage"]
    ] == [
        (0, "rationales", 5, 0),
        (1, "synthesize", 2, 0),
        (1, "label", 4, 1),
    ]
    (point,) = tables["tokens_per_point"]
    assert point["teacher tokens after round 0"] == 1500 and point["points gained"] == 5.0
    assert point["tokens per point"] == 300.0

    without = tmp_path / "without"
    without.mkdir()
    rounds = [_round(0, 0.2, None), _round(1, 0.25, None)]
    (without / "run.json").write_text(json.dumps({"status": "completed", "rounds": rounds}))
    report = build_report(without)
    assert "teacher_usage" not in report.tables()
    assert any("teacher usage" in m for m in report.missing)
    assert any("round 1: funnel" in m for m in report.missing)
