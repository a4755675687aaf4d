"""The lab world: structures, reference programs, the teacher's operations, seeded splits."""

from __future__ import annotations

import random

import pytest

from fdd_core.config import SandboxConfig
from fdd_core.data import load_benchmark
from fdd_core.parsing import extract_problems, extract_program
from fdd_core.sandbox import Sandbox
from fdd_core.schemas import normalize_text
from fdd_core.world import World, complex_variation, similar_problem
from fdd_core.world.structure import STORIES, random_structure, reworded
from fdd_core.world.world import DATA_DIR, FILES, check, generate_splits


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def _structures(n: int = 60, seed: int = 3):
    rng = random.Random(seed)
    return [random_structure(rng, 1 + i % 5, i % 3 == 0) for i in range(n)]


def test_every_reference_program_runs_in_the_sandbox_to_its_answer(world):
    entries = [e for split in world.splits.values() for e in split]
    rng = random.Random(7)
    variations = [complex_variation(e.structure, rng).structure for e in entries[:40]]
    similar = [similar_problem(e.structure, rng) for e in entries[:40]]
    structures = [e.structure for e in entries] + variations + similar
    programs = [s.program() for s in structures]
    for p in programs:  # the project's parser takes them as they are
        parsed = extract_program("```python\n" + p + "\n```")
        assert parsed.program == p
    with Sandbox(SandboxConfig(max_workers=2)) as box:
        results = box.run_many(programs)
    for s, res in zip(structures, results):
        assert res.status == "ok", (s.render(), res)
        assert res.answer == pytest.approx(s.answer()), s.render()


def test_answers_are_positive_whole_numbers_and_distractors_are_ignored():
    for s in _structures():
        assert s.answer() > 0
        no_distractor = type(s)(**{**s.__dict__, "distractors": ()})
        assert no_distractor.answer() == s.answer()
        assert len(s.sentences()) == 1 + s.n_steps + len(s.distractors) + 1


def test_complex_variations_add_steps_or_a_distractor_and_keep_the_story():
    rng = random.Random(11)
    kinds = set()
    for s in _structures(80):
        v = complex_variation(s, rng)
        new = v.structure
        kinds.add(v.kind)
        assert (new.story, new.person, new.friend, new.noun, new.start) == (
            s.story,
            s.person,
            s.friend,
            s.noun,
            s.start,
        )
        assert new.answer() != s.answer()
        if v.kind == "distractor":
            assert len(new.distractors) == len(s.distractors) + 1
            assert new.ops == s.ops
        else:
            extra = 1 if v.kind == "extend1" else 2
            assert new.n_steps == s.n_steps + extra
            assert new.steps[: s.n_steps] == s.steps  # the story so far is unchanged
        # The parent's opening sentence is still there, word for word.
        assert new.sentences()[0] == s.sentences()[0]
    assert kinds == {"extend1", "extend2", "distractor"}


def test_similar_problems_keep_the_structure_with_new_entities_and_numbers():
    rng = random.Random(12)
    changed_story = 0
    for s in _structures(80):
        new = similar_problem(s, rng)
        assert new.ops == s.ops
        assert len(new.distractors) == len(s.distractors)
        assert new.render() != s.render()
        changed_story += new.story != s.story
    assert changed_story > 20  # new situations, not only new numbers


def test_reworded_keeps_numbers_and_answer_but_changes_words():
    for s in _structures(30):
        r = reworded(s, random.Random(0))
        assert r.answer() == s.answer() and r.start == s.start
        assert [x.value for x in r.steps] == [x.value for x in s.steps]
        assert r.render() != s.render()


def test_rendered_problems_survive_the_problem_parser_unchanged(world):
    rng = random.Random(5)
    questions = [similar_problem(e.structure, rng).render() for e in world.splits["train"]]
    text = "Here are the problems:\n" + "\n".join(f"{i + 1}. {q}" for i, q in enumerate(questions))
    assert extract_problems(text).problems == questions


def test_splits_are_seeded_unique_and_the_hard_set_has_more_steps(world):
    again = generate_splits()
    assert [e.question for e in again["train"]] == [e.question for e in world.splits["train"]]
    other = generate_splits(seed=1)
    assert [e.question for e in other["test"]] != [e.question for e in world.splits["test"]]
    all_q = [normalize_text(e.question) for split in world.splits.values() for e in split]
    assert len(all_q) == len(set(all_q))
    train_steps = [e.structure.n_steps for e in world.splits["train"]]
    assert set(train_steps) <= {1, 2, 3}
    assert min(e.structure.n_steps for e in world.splits["hard"]) > max(train_steps)
    assert {e.structure.story for e in world.splits["train"]} == set(STORIES)


def test_operations_are_deterministic_under_a_seed(world):
    s = world.splits["train"][3].structure
    a = [complex_variation(s, random.Random(9)).structure.render() for _ in range(2)]
    b = [similar_problem(s, random.Random(9)).render() for _ in range(2)]
    assert a[0] == a[1] and b[0] == b[1]


def test_lookup_maps_text_back_to_structure(world):
    e = world.splits["hard"][0]
    assert world.lookup("  " + e.question.upper() + " ") is e
    assert world.lookup("An unrelated question with 3 numbers?") is None


def test_committed_lab_files_match_the_generator_and_load_as_benchmarks():
    assert check() == []
    for split, name in FILES.items():
        loaded = load_benchmark(str(DATA_DIR / name))
        assert len(loaded.problems) == len(World().splits[split])


def test_ledger_round_trip(tmp_path, world):
    from fdd_core.world.world import Entry

    s = similar_problem(world.splits["train"][0].structure, random.Random(1))
    ledger = tmp_path / "ledger.jsonl"
    w = World()
    w.register(Entry(s.render(), s, "synthetic", disagree=True), ledger)
    fresh = World()
    assert fresh.lookup(s.render()) is None
    assert fresh.load_ledger(ledger) == 1
    got = fresh.lookup(s.render())
    assert got.structure == s and got.disagree
    ledger.write_text("not json\n")
    with pytest.raises(ValueError, match="line 1"):
        World().load_ledger(ledger)
