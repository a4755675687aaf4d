"""The simulated teacher: every prompt type through the real openai backend, and its dials.

The server is started in process on 127.0.0.1 (a free port) by `fdd_core.world.teacher.serve`,
and the pipeline's own stage functions (write_rationales, synthesize_problems,
label_problems, filter_problems) talk to it through `OpenAIBackend`, so these tests check
the teacher the way a run uses it.
"""

from __future__ import annotations

import json
import random

import pytest

from fdd_core.backends.base import SamplingParams
from fdd_core.backends.openai_api import OpenAIBackend
from fdd_core.config import (
    FilteringConfig,
    LabelingConfig,
    SandboxConfig,
    SynthesisConfig,
    TeacherConfig,
)
from fdd_core.filtering import filter_problems
from fdd_core.parsing import extract_problems, extract_program
from fdd_core.prompts import (
    complex_messages,
    program_completion_prompt,
    program_messages,
    similar_messages,
)
from fdd_core.sandbox import Sandbox
from fdd_core.schemas import Problem
from fdd_core.stages import label_problems, synthesize_problems, write_rationales
from fdd_core.world import World
from fdd_core.world.teacher import Dials, SimulatedTeacher, parse_dials, serve


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxConfig(max_workers=2)) as box:
        yield box


def _exec(program: str) -> float | None:
    scope: dict = {}
    exec(program, scope)  # our own reference-style programs; the sandbox test covers safety
    return scope.get("ans")


def _tcfg(server, **kw) -> TeacherConfig:
    return TeacherConfig(
        backend="openai",
        base_url=server.base_url,
        model=server.teacher.model_name,
        request_cache=False,
        **kw,
    )


def test_each_prompt_type_through_the_real_openai_backend(tmp_path, sandbox):
    world = World()
    train = world.splits["train"][:6]
    problems = [Problem.create(e.question, e.answer) for e in train]
    log = tmp_path / "requests.jsonl"
    with serve(world, ledger=tmp_path / "ledger.jsonl", log_path=log) as server:
        for style, endpoint in (("chat", "chat"), ("completion", "completions")):
            tcfg = _tcfg(server, prompt_style=style, endpoint=endpoint, n_samples=2)
            backend = OpenAIBackend(server.base_url, tcfg.model, endpoint=endpoint)
            try:
                examples, stats = write_rationales(problems, backend, tcfg, sandbox)
            finally:
                backend.close()
            assert stats["problems_with_rationale"] == len(problems), stats
            assert {e.question for e in examples} == {p.question for p in problems}
        tcfg = _tcfg(server)
        backend = OpenAIBackend(server.base_url, tcfg.model)
        try:
            new, stats = synthesize_problems(
                problems,
                ["complex"] * 3 + ["similar"] * 3,
                backend,
                tcfg,
                SynthesisConfig(n_complex=2, n_similar=2),
                round_index=1,
            )
            assert stats["complex_generated"] == 6 and stats["similar_generated"] == 6
            for p in new:
                parent = world.lookup(next(q.question for q in problems if q.id == p.parent_id))
                child = world.lookup(p.question)
                assert child is not None, p.question
                if p.origin == "complex":
                    assert child.structure.story == parent.structure.story
                    assert child.structure.n_steps >= parent.structure.n_steps
                else:
                    assert child.structure.ops == parent.structure.ops
            labelled, lstats = label_problems(
                new, backend, tcfg, LabelingConfig(n_programs=3), sandbox, round_index=1
            )
        finally:
            backend.close()
        assert lstats["accepted"] == len(new)
        for e in labelled:
            assert e.answer == world.lookup(e.question).answer
        # A second process would find every written problem in the ledger.
        fresh = World()
        assert fresh.load_ledger(tmp_path / "ledger.jsonl") == len({p.question for p in new})
    kinds = [json.loads(line)["kind"] for line in log.read_text().splitlines()]
    assert {"program", "complex", "similar"} <= set(kinds)
    assert "unknown" not in kinds


def test_completion_prompts_honour_stop_strings_and_seeds_give_the_same_answers():
    world = World()
    q = world.splits["hard"][2].question
    with serve(world, Dials(wrong_program=0.5)) as server:
        backend = OpenAIBackend(server.base_url, server.teacher.model_name, endpoint="completions")
        try:
            params = SamplingParams(n=8, temperature=0.7, seed=5, max_tokens=200, stop=("```",))
            a = backend.generate([program_completion_prompt(q)], params)[0]
            b = backend.generate([program_completion_prompt(q)], params)[0]
        finally:
            backend.close()
    assert [c.text for c in a] == [c.text for c in b]
    assert all("```" not in c.text for c in a)
    answers = {_exec(c.text) for c in a}
    assert len(answers) > 1  # half of the samples are wrong at this dial


def test_unknown_questions_and_prompts_get_no_program():
    teacher = SimulatedTeacher(World())
    out = teacher.complete(program_messages("Who wrote 12 books about 3 cats?")[-1]["content"])
    assert extract_program(out[0]).program is None
    assert teacher.stats["unknown_question"] == 1
    out = teacher.complete("Tell me a joke about 7 dogs.")
    assert extract_problems(out[0]).problems == []


def test_parse_dials_names_the_bad_dial():
    assert parse_dials(["wrong_program=0.25"]).wrong_program == 0.25
    with pytest.raises(ValueError, match="one of wrong_program"):
        parse_dials(["wrong=0.1"])
    with pytest.raises(ValueError, match="less than or equal to 1"):
        parse_dials(["disagree=1.5"])


# ----------------------------------------------------------------------------- dials

TOL = 0.05  # absolute; each rate is measured on >= 800 draws (std error <= 0.018)


def _text(messages) -> str:
    return "\n\n".join(m["content"] for m in messages)


def test_wrong_program_and_unparseable_rates():
    world = World()
    dials = Dials(wrong_program=0.2, unparseable=0.1)
    teacher = SimulatedTeacher(world, dials, seed=3)
    entries = world.splits["train"] + world.splits["test"]
    wrong = unparsed = total = 0
    for k, e in enumerate(entries * 3):
        for out in teacher.complete(_text(program_messages(e.question)), n=4, seed=k):
            total += 1
            parsed = extract_program(out)
            if parsed.program is None:
                unparsed += 1
            elif _exec(parsed.program) != pytest.approx(e.answer):
                wrong += 1
    assert total >= 800
    assert abs(unparsed / total - 0.1) < TOL
    # Wrong among the parsed ones (the unparseable roll comes first).
    assert abs(wrong / (total - unparsed) - 0.2) < TOL


def test_problem_dials_rates(tmp_path):
    world = World()
    dials = Dials(
        duplicate_exact=0.1,
        duplicate_near=0.1,
        test_paraphrase=0.15,
        disagree=0.2,
        unparseable=0.05,
    )
    teacher = SimulatedTeacher(world, dials, seed=1)
    tests = {e.question for e in world.test_questions()}
    counts = {"items": 0, "exact": 0, "near": 0, "para": 0, "new": 0, "disagree": 0, "empty": 0}
    completions = 0
    for k, e in enumerate(world.splits["train"] * 6):
        make = complex_messages if k % 2 else similar_messages
        parent = e.question
        for out in teacher.complete(_text(make(parent, 4)), n=1, seed=k):
            completions += 1
            items = extract_problems(out).problems
            if not items:
                counts["empty"] += 1
                continue
            # extract_problems drops repeats within one list: read the raw list instead.
            raw = [line.split(". ", 1)[1] for line in out.splitlines()[1:]]
            for i, q in enumerate(raw):
                counts["items"] += 1
                entry = world.lookup(q)
                assert entry is not None, q
                if q == parent or (i and q == raw[i - 1]):
                    counts["exact"] += 1
                elif entry.duplicate_of == "near":
                    counts["near"] += 1
                    assert parent in q
                elif entry.paraphrase_of is not None:
                    counts["para"] += 1
                    assert entry.paraphrase_of in tests
                    assert entry.answer == world.lookup(entry.paraphrase_of).answer
                else:
                    counts["new"] += 1
                    counts["disagree"] += entry.disagree
    n = counts["items"]
    assert n >= 800
    assert abs(counts["empty"] / completions - 0.05) < TOL
    assert abs(counts["exact"] / n - 0.1) < TOL
    assert abs(counts["near"] / n - 0.1) < TOL
    assert abs(counts["para"] / n - 0.15) < TOL
    assert abs(counts["disagree"] / counts["new"] - 0.2) < TOL


def test_disagreeing_problems_split_their_votes():
    world = World()
    teacher = SimulatedTeacher(world, Dials(disagree=1.0), seed=2)
    parent = world.splits["train"][0].question
    out = teacher.complete(_text(similar_messages(parent, 4)), seed=1)[0]
    rng = random.Random(0)
    questions = extract_problems(out).problems
    wrong_shares = []
    for q in questions:
        truth = world.lookup(q).answer
        outs = teacher.complete(_text(program_messages(q)), n=200, seed=rng.randrange(1000))
        answers = [_exec(extract_program(o).program) for o in outs]
        wrong = [a for a in answers if a != pytest.approx(truth)]
        assert len(set(wrong)) == 1  # one fixed confusing answer: votes can tie or flip
        wrong_shares.append(len(wrong) / len(answers))
    assert all(abs(s - 0.5) < 0.12 for s in wrong_shares)


def test_planted_paraphrases_meet_the_real_filter(tmp_path):
    """Some planted paraphrases are caught by decontamination (a lead-in keeps 13-grams)."""
    world = World()
    teacher = SimulatedTeacher(world, Dials(test_paraphrase=1.0), seed=4)
    parent = world.splits["train"][1].question
    planted = []
    for k in range(10):
        out = teacher.complete(_text(similar_messages(parent, 4)), seed=k)[0]
        planted += extract_problems(out).problems
    tests = {"test": [e.question for e in world.test_questions()]}
    result = filter_problems(
        [Problem.create(q) for q in planted], existing=[], test_sets=tests, cfg=FilteringConfig()
    )
    caught = result.dropped["contaminated_ngram"] + result.dropped["contaminated_near"]
    assert 0 < caught <= len(planted)


def test_cli_names_the_simulated_teacher_and_rejects_bad_dials(capsys):
    from fdd.cli import build_parser, main

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert "SIMULATED teacher" in sub.choices["lab"].format_help()
    assert "simulated teacher" in sub.choices["simteacher"].format_help().lower()
    assert main(["lab", "configs/lab.yaml", "--dial", "wrong=0.5"]) == 2
    assert "one of wrong_program" in capsys.readouterr().err


def test_fdd_simteacher_serves_until_sigterm_then_exits_cleanly(tmp_path):
    """`fdd simteacher` as its own process: answers, and SIGTERM ends it with status 0."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fdd", "simteacher", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "fdd simteacher did not answer in 60 s"
                time.sleep(0.2)
        assert r.status_code == 200 and r.json()["data"][0]["owned_by"] == "fdd-lab"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0  # handled: a clean exit, not death by signal
        assert "simulated teacher" in proc.stdout.read()
        with pytest.raises(httpx.TransportError):  # the socket is closed
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
