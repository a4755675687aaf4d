"""Benchmark specs and evaluation: buckets, files, real backend, and train-then-evaluate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from fdd_core.backends.base import Completion, SamplingParams
from fdd_core.benchmarks import list_specs, load_problems, load_spec
from fdd_core.config import EvaluationConfig, SandboxConfig, StudentConfig, TrainingConfig
from fdd_core.evaluation import (
    BUCKETS,
    benchmark_model,
    default_eval_dir,
    evaluate,
    model_config_for,
    read_predictions,
)
from fdd_core.prompts import STUDENT_STOP, student_prompt
from fdd_core.schemas import ModelRef, Problem


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Shared 2-core test machines: tiny models run several times faster on one torch
    # thread than on two contended ones (measured: 13 s against 41 s for the training below).
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SANDBOX = SandboxConfig(timeout_s=1.0, cpu_s=1, memory_mb=256, max_workers=2)

# question -> (reference answer, what the fake student writes, expected bucket)
CASES = {
    "Ann has 56 cards and gives away 23. How many are left?": (
        33,
        "cards = 56\ngiven = 23\nans = cards - given",
        "correct",
    ),
    "A box has 4 rows of 6 eggs. How many eggs?": (24, "ans = 4 + 6", "wrong_answer"),
    "Tim splits 10 apples among 0 friends. How many each?": (0, "ans = 10 / 0", "error"),
    "A snail climbs forever. How far?": (1, "while True:\n    pass\nans = 1", "timeout"),
    "How many grains of sand are there?": (5, "x = [0] * (10 ** 10)\nans = 5", "memory"),
    "What is seven plus one?": (8, "I am not sure how to write that.", "no_program"),
    "What is two plus two?": (4, "ans = 4\ndel ans", "no_answer"),
    "What is three plus three?": (6, "ans = 'six'", "bad_answer"),
    "What is five plus five?": (10, None, "generation_error"),
}


class ScriptedBackend:
    """A test double: answers each prompt with a fixed completion and records its calls."""

    name = "scripted"
    model_id = "scripted-student"

    def __init__(self, answers: dict[str, str | None]):
        self.answers = {student_prompt(q): a for q, a in answers.items()}
        self.calls: list[tuple[list[str], SamplingParams]] = []
        self.closed = False

    def generate(self, prompts, params):
        self.calls.append((list(prompts), params))
        out = []
        for p in prompts:
            text = self.answers[p]
            if text is None:
                out.append([Completion(text="", finish_reason="error")])
            else:
                out.append([Completion(text=text, completion_tokens=len(text.split()))])
        return out

    def close(self):
        self.closed = True


def problems_for(cases: dict) -> list[Problem]:
    return [Problem.create(q, ref) for q, (ref, _, _) in cases.items()]


def write_jsonl(path: Path, problems: list[Problem]) -> Path:
    path.write_text(
        "".join(json.dumps({"question": p.question, "answer": p.answer}) + "\n" for p in problems)
    )
    return path


# --------------------------------------------------------------------------- specs


def test_packaged_specs_load_and_are_versioned():
    names = list_specs()
    assert names == ["asdiv", "embedded", "gsm8k", "multiarith", "svamp"]
    for name in names:
        spec = load_spec(name)
        assert spec.name == name and spec.loader == name and spec.version >= 1
        assert spec.split == "test" and spec.answer_extraction == "program"
        assert spec.generation.stop == STUDENT_STOP
        params = spec.sampling()
        assert params.greedy and params.max_tokens == spec.generation.max_tokens
        assert spec.render("What is 2 + 2?") == student_prompt("What is 2 + 2?")
    assert load_spec("gsm8k").sampling(max_tokens=7).max_tokens == 7


def test_spec_files_forbid_unknown_fields_and_prompts(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("name: mine\nloader: jsonl\npath: x.jsonl\nversion: 1\nstops: ['x']\n")
    with pytest.raises(ValueError, match="stops"):
        load_spec(bad)
    bad.write_text("name: mine\nloader: jsonl\npath: x.jsonl\nversion: 1\nprompt: chatty\n")
    with pytest.raises(ValueError, match="unknown prompt 'chatty'"):
        load_spec(bad)
    with pytest.raises(ValueError, match="unknown benchmark 'gsm9k'.*gsm8k"):
        load_spec("gsm9k")


def test_a_user_jsonl_file_is_an_ad_hoc_benchmark(tmp_path):
    path = write_jsonl(tmp_path / "my problems.jsonl", problems_for(CASES))
    spec = load_spec(str(path))
    assert spec.loader == "jsonl" and spec.path == str(path) and spec.name == "my_problems"
    loaded = load_problems(spec, limit=3)
    assert [p.question for p in loaded.problems] == list(CASES)[:3]
    assert loaded.problems[0].answer == 33


def test_embedded_spec_loads_the_packaged_test_split():
    loaded = load_problems(load_spec("embedded"), limit=5)
    assert len(loaded.problems) == 5 and all(p.answer is not None for p in loaded.problems)


def test_gsm8k_spec_reads_a_local_file():
    from tests.conftest import shared_file

    loaded = load_problems(load_spec("gsm8k"), shared_file("gsm8k", "test.jsonl"), limit=4)
    assert len(loaded.problems) == 4 and loaded.problems[0].answer is not None


# --------------------------------------------------------------------------- evaluate


def test_every_bucket_is_counted_and_written(tmp_path):
    backend = ScriptedBackend({q: text for q, (_, text, _) in CASES.items()})
    problems = problems_for(CASES)
    spec = load_spec("embedded")
    result = evaluate(backend, spec, problems, SANDBOX, batch_size=4, out_dir=tmp_path / "e")

    expected = dict.fromkeys(BUCKETS, 0)
    for _, _, bucket in CASES.values():
        expected[bucket] += 1
    assert result.breakdown == expected
    assert result.n == 9 and result.correct == 1 and result.accuracy == pytest.approx(1 / 9)
    assert result.benchmark == "embedded" and result.model_id == "scripted-student"
    # Batches of 4, in order, greedy, with the spec's stop strings and budget.
    assert [len(prompts) for prompts, _ in backend.calls] == [4, 4, 1]
    budget = spec.generation.max_tokens
    assert all(
        p.greedy and p.stop == STUDENT_STOP and p.max_tokens == budget for _, p in backend.calls
    )
    assert [p for prompts, _ in backend.calls for p in prompts] == [
        student_prompt(q) for q in CASES
    ]

    rows = read_predictions(result)
    assert [r["question"] for r in rows] == list(CASES)
    for row, problem, (ref, _text, bucket) in zip(rows, problems, CASES.values()):
        assert row["id"] == problem.id and row["reference"] == ref
        assert row["status"] == bucket, (row["question"], row)
    by_status = {r["status"]: r for r in rows}
    assert by_status["correct"]["answer"] == 33
    assert by_status["correct"]["program"] == CASES[next(iter(CASES))][1]
    assert by_status["wrong_answer"]["answer"] == 10
    assert by_status["no_program"]["program"] is None
    assert "ZeroDivisionError" in by_status["error"]["stderr"]
    saved = json.loads((tmp_path / "e" / "result.json").read_text())
    assert saved["breakdown"] == expected and saved["spec"]["name"] == "embedded"
    assert result.summary() == {
        "n": 9,
        "accuracy": pytest.approx(1 / 9),
        "correct": 1,
        "wrong_answer": 1,
        "error": 1,
        "timeout": 1,
        "no_program": 1,
        "other": 4,
    }


def test_evaluate_without_out_dir_writes_nothing_and_refuses_unlabelled(tmp_path):
    backend = ScriptedBackend({"What is 1 + 1?": "ans = 2"})
    result = evaluate(
        backend, load_spec("embedded"), [Problem.create("What is 1 + 1?", 2)], SANDBOX, max_tokens=5
    )
    assert result.accuracy == 1.0 and result.predictions_path is None
    assert backend.calls[0][1].max_tokens == 5
    with pytest.raises(ValueError, match="no reference answer"):
        evaluate(backend, load_spec("embedded"), [Problem.create("What is 1 + 1?")], SANDBOX)


def test_evaluate_model_files_results_with_the_model_and_merges_the_summary(tmp_path):
    model_dir = tmp_path / "student"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    cases = dict(list(CASES.items())[:3])
    data = write_jsonl(tmp_path / "small.jsonl", problems_for(cases))
    backend = ScriptedBackend({q: text for q, (_, text, _) in CASES.items()})
    cfg = EvaluationConfig(limit=2)
    first = benchmark_model(
        str(model_dir), [str(data)], eval_cfg=cfg, sandbox_cfg=SANDBOX, backend=backend
    )
    assert first["small"].n == 2 and first["small"].correct == 1
    assert Path(first["small"].predictions_path).parent == model_dir / "eval" / "small"
    emb = benchmark_model(
        str(model_dir),
        ["embedded"],
        eval_cfg=EvaluationConfig(limit=1),
        sandbox_cfg=SANDBOX,
        backend=ScriptedBackend(_embedded_answers(1)),
    )
    assert emb["embedded"].n == 1 and not backend.closed  # a caller's backend stays open
    summary = json.loads((model_dir / "eval" / "results.json").read_text())
    assert set(summary["benchmarks"]) == {"small", "embedded"}  # merged, not replaced
    assert summary["benchmarks"]["small"]["accuracy"] == 0.5
    assert (model_dir / "eval" / summary["benchmarks"]["small"]["predictions"]).is_file()


def _embedded_answers(n):
    probs = load_problems(load_spec("embedded"), limit=n).problems
    return {p.question: f"ans = {p.answer}" for p in probs}


def test_model_config_and_default_folder_for_each_kind_of_model(tmp_path):
    base = StudentConfig(batch_size=3)
    lora = model_config_for(ModelRef(path="/x/a", base_model="b", adapter=True), base)
    assert (lora.model, lora.adapter, lora.batch_size) == ("b", "/x/a", 3)
    named = model_config_for("some/hub-id", base)
    assert (named.model, named.adapter) == ("some/hub-id", None)
    assert default_eval_dir(str(tmp_path)) == tmp_path / "eval"
    assert default_eval_dir("smollm2-135m-instruct", tmp_path / "c") == (
        tmp_path / "c" / "eval" / "smollm2-135m-instruct"
    )


# --------------------------------------------------------------------------- real backend


def test_tiny_model_through_the_real_hf_backend(tmp_path, tiny_causal_dir):
    from fdd_core.backends.hf import HFBackend

    problems = load_problems(load_spec("embedded"), limit=4).problems
    backend = HFBackend(str(tiny_causal_dir), device="cpu", batch_size=4)
    try:
        result = evaluate(
            backend, load_spec("embedded"), problems, SANDBOX, out_dir=tmp_path / "e", max_tokens=12
        )
    finally:
        backend.close()
    rows = read_predictions(result)
    assert [r["id"] for r in rows] == [p.id for p in problems]
    assert sum(result.breakdown.values()) == result.n == 4
    assert result.correct == sum(r["status"] == "correct" for r in rows)
    assert all(r["status"] in BUCKETS for r in rows)
    assert all(r["completion_tokens"] <= 12 for r in rows)
    assert result.generated_tokens == sum(r["completion_tokens"] for r in rows) > 0


@pytest.mark.slow
def test_a_trained_student_scores_above_zero(tmp_path, tiny_causal_dir):
    """Training and evaluation for real: fit verified programs, then solve those problems."""
    from fdd_core.training import train_student
    from tests.test_training import make_examples

    examples = make_examples(8)
    cfg = TrainingConfig(
        method="full", max_steps=100, learning_rate=5e-3, batch_size=8, warmup_ratio=0.0
    )
    ref = train_student(examples, str(tiny_causal_dir), cfg, tmp_path / "student", device="cpu")
    data = write_jsonl(
        tmp_path / "seen.jsonl", [Problem.create(e.question, e.answer) for e in examples]
    )
    results = benchmark_model(
        ref,
        [str(data)],
        eval_cfg=EvaluationConfig(),
        sandbox_cfg=SANDBOX,
        student_cfg=StudentConfig(device="cpu"),
        max_tokens=48,
    )
    res = results["seen"]
    assert res.n == 8 and res.accuracy > 0, res.breakdown
    assert Path(res.predictions_path).parent == tmp_path / "student" / "eval" / "seen"
    summary = json.loads((tmp_path / "student" / "eval" / "results.json").read_text())
    assert summary["model"]["path"] == ref.path
    assert summary["benchmarks"]["seen"]["correct"] == res.correct


# --------------------------------------------------------------------------- CLI


def _parse(argv):
    from fdd import eval_cmd

    parser = argparse.ArgumentParser(prog="fdd")
    eval_cmd.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_eval_prints_the_table_and_where_results_went(tmp_path, tiny_causal_dir, capsys):
    data = write_jsonl(tmp_path / "mine.jsonl", problems_for(CASES))
    args = _parse(
        [
            "eval",
            "--model",
            str(tiny_causal_dir),
            "--benchmark",
            str(data),
            "--limit",
            "2",
            "--max-tokens",
            "6",
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--set",
            "sandbox.timeout_s=1",
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("benchmark"))
    for col in ("n", "accuracy", "correct", "wrong_answer", "error", "timeout", "no_program"):
        assert col in header.split()
    assert "mine" in out and str(tmp_path / "out" / "results.json") in out
    rows = [
        json.loads(x)
        for x in (tmp_path / "out" / "mine" / "predictions.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 2


def test_cli_eval_rejects_ambiguous_data_and_bad_names(tmp_path):
    from fdd_core.config import ConfigError

    f = write_jsonl(tmp_path / "a.jsonl", problems_for(CASES))
    args = _parse(["eval", "--benchmark", "gsm8k", "--benchmark", "svamp", "--data", str(f)])
    with pytest.raises(ConfigError, match="NAME=FILE"):
        args.func(args)
    args = _parse(["eval", "--benchmark", "gsm9k"])
    with pytest.raises(ConfigError, match="unknown benchmark"):
        args.func(args)
    args = _parse(["eval", "--benchmark", "gsm8k", "--data", str(tmp_path / "none.jsonl")])
    with pytest.raises(ConfigError, match="file not found"):
        args.func(args)


def test_model_config_for_a_served_model_keeps_the_endpoint_settings():
    from fdd_core.config import load_config
    from fdd_core.evaluation import model_config_for

    cfg = load_config(None, ["student.backend=openai", "student.base_url=http://h:8000/v1"])
    served = model_config_for("served-model", cfg.student)
    assert (served.backend, served.model, served.base_url) == (
        "openai",
        "served-model",
        "http://h:8000/v1",
    )
    assert not hasattr(served, "adapter")  # no stray field an endpoint does not take
