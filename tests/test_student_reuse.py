"""fdd_core/training/reuse.py: a round whose dataset holds the previous round's examples
reuses that round's student instead of training the same one again (issue: the quickstart
retrained identical data in rounds 1 and 2).

Real pieces: dataset versions written by the store (a chain D0 -> D1 (+0) -> D2 (+0) ->
D3 (+1)) and a student really trained on D0 with the tiny causal model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fdd_core.config import TrainingConfig
from fdd_core.store import write_version
from fdd_core.training import train_student
from fdd_core.training.reuse import reusable_student, same_examples_as
from tests.test_training import make_examples

CFG = TrainingConfig(method="full", epochs=1, batch_size=4, max_seq_len=96)


@pytest.fixture(scope="module")
def chain(tmp_path_factory, tiny_causal_dir):
    root = tmp_path_factory.mktemp("datasets")
    rows = make_examples(6)
    kw = {"config_hash": "c", "code_version": "v"}
    d0 = write_version(root, rows, parent=None, round=0, extra={"added": 6}, **kw)
    d1 = write_version(root, rows, parent=d0, round=1, extra={"added": 0}, **kw)
    d2 = write_version(root, rows, parent=d1, round=2, extra={"added": 0}, **kw)
    grown = rows + make_examples(1, offset=6)
    d3 = write_version(root, grown, parent=d2, round=3, extra={"added": 1}, **kw)
    student = train_student(
        rows, str(tiny_causal_dir), CFG, tmp_path_factory.mktemp("r0") / "student",
        dataset_version=d0.version_id, device="cpu",
    )  # fmt: skip
    return {"d": [d0, d1, d2, d3], "student": student, "base": str(tiny_causal_dir)}


def test_versions_that_added_nothing_hold_their_ancestors_examples(chain):
    d0, d1, d2, d3 = chain["d"]
    assert len({d.version_id for d in chain["d"]}) == 4  # four versions, ...
    assert same_examples_as(d2) == {d2.version_id, d1.version_id, d0.version_id}
    assert same_examples_as(d3) == {d3.version_id}  # ... the last with one row more
    assert same_examples_as(d0) == {d0.version_id}


def test_the_previous_student_is_reused_over_rounds_that_added_nothing(chain):
    d0, d1, d2, d3 = chain["d"]
    student, base = chain["student"], chain["base"]
    for d in (d1, d2):  # round 1, then round 2 (its previous student is round 0's, reused)
        reused, why = reusable_student(student, d, base, CFG)
        assert reused == student, why
    reused, why = reusable_student(student, d3, base, CFG)
    assert reused is None and why == "the dataset has other examples"


def test_other_settings_base_or_prompt_mean_training_again(chain, tmp_path):
    _, d1, _, _ = chain["d"]
    student, base = chain["student"], chain["base"]
    assert reusable_student(student, d1, base, CFG.model_copy(update={"epochs": 2}))[1] == (
        "other training settings"
    )
    # Where and how training is launched does not change the student: still reused.
    launch = CFG.model_copy(update={"isolation": "inline", "timeout_s": 60.0})
    assert reusable_student(student, d1, base, launch)[0] == student
    assert reusable_student(student, d1, "another-model", CFG)[1] == "another base model"
    assert reusable_student(None, d1, base, CFG)[1] == "no previous student"

    meta_path = tmp_path / "student" / "meta.json"
    meta_path.parent.mkdir()
    meta = json.loads((Path(student.path) / "meta.json").read_text())
    meta["prompt_version"] = "older"
    meta_path.write_text(json.dumps(meta))
    older = student.model_copy(update={"path": str(meta_path.parent)})
    assert reusable_student(older, d1, base, CFG)[1] == "another student prompt"
    broken = student.model_copy(update={"path": str(tmp_path / "gone")})
    assert reusable_student(broken, d1, base, CFG)[1].startswith("the previous student has no")
