"""Reuse a student instead of training the same one again.

Every round trains a fresh student from the base checkpoint on that round's dataset. When a
round adds nothing, its dataset holds exactly the examples of the previous round's, and
with the same base, training settings and student prompt the training would only make the
previous round's student once more (bit-identical on CPU, where training is deterministic;
a re-draw of the same distribution on a GPU). `reusable_student` says when the previous
student can stand in, reading what made it from its `meta.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

from fdd_core.config import TrainingConfig
from fdd_core.prompts import STUDENT_PROMPT_VERSION
from fdd_core.schemas import DatasetRef, ModelRef
from fdd_core.store import lineage
from fdd_core.training.loop import training_config_hash
from fdd_core.training.student import META_FILE


def same_examples_as(dataset: DatasetRef) -> set[str]:
    """Version ids holding exactly `dataset`'s examples: itself and the ancestors it reaches
    through versions that added nothing (a version is its parent's rows plus what it added,
    in order, so `added == 0` means the same rows)."""
    same = {dataset.version_id}
    for manifest in lineage(Path(dataset.path).parent, dataset.version_id):
        parent = manifest.get("parent_version")
        if parent is None or (manifest.get("extra") or {}).get("added") != 0:
            break
        same.add(parent)
    return same


def reusable_student(
    previous: ModelRef | None, dataset: DatasetRef, base_model: str, training: TrainingConfig
) -> tuple[ModelRef | None, str]:
    """(the previous student, why) when training on `dataset` would make it again;
    (None, why not) otherwise."""
    if previous is None or previous.dataset_version is None:
        return None, "no previous student"
    try:
        meta = json.loads((Path(previous.path) / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, f"the previous student has no readable {META_FILE}"
    if meta.get("base_model") != base_model:
        return None, "another base model"
    if meta.get("training_config_hash") != training_config_hash(training):
        return None, "other training settings"
    if meta.get("prompt_version") != STUDENT_PROMPT_VERSION:
        return None, "another student prompt"
    if previous.dataset_version not in same_examples_as(dataset):
        return None, "the dataset has other examples"
    return previous, "same examples, base model, training settings and prompt"
