"""Label precision and contamination recall, on a scripted round whose truth is known."""

from __future__ import annotations

import random

import pytest

from fdd_core.io import write_jsonl
from fdd_core.reports import RoundResult
from fdd_core.schemas import Example, Problem, Rationale
from fdd_core.store import write_version
from fdd_core.world import World, similar_problem
from fdd_core.world.lab import lab_metrics, run_round_metrics
from fdd_core.world.structure import reworded
from fdd_core.world.world import Entry


def _example(problem: Problem, answer: float, round_index: int = 1) -> Example:
    labelled = problem.model_copy(update={"answer": answer})
    rationale = Rationale(
        problem_id=problem.id,
        program=f"ans = {answer}",
        answer=answer,
        teacher="t",
        prompt_version="v",
    )
    return Example.join(labelled, rationale)


@pytest.fixture
def scripted():
    """Six candidates with known truth, what the filter kept, and what was labelled."""
    world = World()
    rng = random.Random(0)
    train, test = world.splits["train"], world.splits["test"]
    a = similar_problem(train[0].structure, rng)
    b = similar_problem(train[2].structure, rng)
    para_lead = "Try to solve this. " + test[0].question
    para_words = reworded(test[1].structure, rng)
    near = "Consider this problem. " + train[1].question
    for entry in (
        Entry(a.render(), a, "synthetic"),
        Entry(b.render(), b, "synthetic"),
        Entry(para_lead, test[0].structure, "synthetic", paraphrase_of=test[0].question),
        Entry(para_words.render(), para_words, "synthetic", paraphrase_of=test[1].question),
        Entry(near, train[1].structure, "synthetic", duplicate_of="near"),
    ):
        world.register(entry)
    unknown = "A question the world never wrote, with 4 apples and 5 pears?"
    mk = lambda q, o="similar": Problem.create(q, origin=o, round=1)  # noqa: E731
    candidates = [
        mk(a.render()),
        mk(b.render(), "complex"),
        mk(para_lead),
        mk(para_words.render()),
        mk(near),
        mk(unknown),
    ]
    kept = [candidates[i] for i in (0, 1, 3, 5)]  # the filter caught the lead-in and near dup
    new = [
        _example(candidates[0], a.answer()),  # right
        _example(candidates[0], a.answer()),  # a second rationale: still one problem
        _example(candidates[1], b.answer() + 1),  # majority voting accepted a wrong label
        _example(candidates[3], test[1].answer),  # the leaked paraphrase, labelled right
        _example(candidates[5], 9.0),  # unknown to the world
    ]
    return world, candidates, kept, new


def test_label_precision_and_contamination_recall_on_a_scripted_round(scripted):
    world, candidates, kept, new = scripted
    m = lab_metrics(world, candidates, kept, new)
    assert m["labels_accepted"] == 3 and m["labels_correct"] == 2 and m["labels_unknown"] == 1
    assert m["label_precision"] == pytest.approx(2 / 3)
    assert m["paraphrases_planted"] == 2 and m["paraphrases_caught"] == 1
    assert m["contamination_recall"] == pytest.approx(0.5)
    assert m["paraphrases_in_dataset"] == 1
    assert m["near_duplicates_planted"] == 1 and m["near_duplicate_recall"] == 1.0


def test_ratios_without_a_denominator_are_left_out(scripted):
    world, candidates, _, _ = scripted
    m = lab_metrics(world, candidates[:2], candidates[:2], [])
    assert "label_precision" not in m and "contamination_recall" not in m
    assert m["labels_accepted"] == 0 and m["paraphrases_planted"] == 0


def test_metrics_from_the_files_a_round_leaves(tmp_path, scripted):
    world, candidates, kept, new = scripted
    run = tmp_path / "run"
    write_jsonl(
        run / "round-1" / "synth-similar" / "shard-00000.jsonl",
        (p.model_dump(mode="json") for p in candidates[:4]),
    )
    write_jsonl(
        run / "round-1" / "synth-complex" / "shard-00000.jsonl",
        (p.model_dump(mode="json") for p in candidates[4:]),
    )
    write_jsonl(run / "round-1" / "filtered-abc.jsonl", (p.model_dump(mode="json") for p in kept))
    original = Problem.create(world.splits["train"][0].question, world.splits["train"][0].answer)
    old = [_example(original, original.answer, round_index=0)]
    rows = old + [e.model_copy(update={"round": 1}) for e in new]
    rows = list({e.id: e for e in rows}.values())
    ref = write_version(
        run / "datasets", rows, parent=None, round=1, config_hash="c", code_version="v"
    )
    m = run_round_metrics(world, run, 1, ref)
    assert m == lab_metrics(world, candidates, kept, new)
    assert run_round_metrics(world, run, 0, ref) == {}
    row = RoundResult(round=1, dataset=ref, lab_metrics=m).row()
    assert row["label_precision"] == pytest.approx(0.6667) and row["contamination_recall"] == 0.5
