"""What only a simulated world can measure: label precision and contamination recall.

The pipeline never learns that its teacher is simulated. After a run, the lab reads what
each round left on disk (the candidates synthesis wrote, the ones the filter kept, the
dataset version) and asks the world (its splits plus the simulated teacher's ledger) for
the truth about each question:

- ``label_precision``: of the new problems majority voting accepted into the dataset this
  round, the share whose label equals the world's answer (``labels_accepted``,
  ``labels_correct``; questions the world does not know are counted in ``labels_unknown``
  and left out);
- ``contamination_recall``: of the candidates that are planted paraphrases of test
  questions, the share the filter dropped (``paraphrases_planted``, ``paraphrases_caught``;
  ``paraphrases_in_dataset`` counts the ones that were labelled and trained on);
- ``near_duplicate_recall``: the same for planted near duplicates of the parent problem.

A ratio is left out when its denominator is zero, never reported as 0 or 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from fdd_core.grading import answers_match
from fdd_core.io import read_jsonl
from fdd_core.schemas import DatasetRef, Example, Problem, normalize_text
from fdd_core.world.world import World

LEDGER_NAME = "ledger.jsonl"
TEACHER_DIR = "simulated-teacher"  # inside the run folder: ledger and request log


def lab_metrics(
    world: World,
    candidates: Sequence[Problem],
    kept: Iterable[Problem],
    new_examples: Sequence[Example],
    rel_tol: float = 1e-4,
) -> dict[str, float]:
    """One round's truth-based metrics (see the module docstring)."""
    out: dict[str, float] = {}
    labels: dict[str, tuple[str, float]] = {}
    for e in new_examples:
        if e.origin != "original":
            labels.setdefault(e.problem_id, (e.question, e.answer))
    accepted = correct = unknown = 0
    leaked = 0
    for question, answer in labels.values():
        entry = world.lookup(question)
        if entry is None:
            unknown += 1
            continue
        accepted += 1
        correct += answers_match(answer, entry.answer, rel_tol=rel_tol)
        leaked += entry.paraphrase_of is not None
    out["labels_accepted"] = accepted
    out["labels_correct"] = correct
    out["labels_unknown"] = unknown
    if accepted:
        out["label_precision"] = correct / accepted

    kept_keys = {normalize_text(p.question) for p in kept}
    planted = caught = near = near_caught = 0
    for p in candidates:
        entry = world.lookup(p.question)
        if entry is None:
            continue
        dropped = normalize_text(p.question) not in kept_keys
        if entry.paraphrase_of is not None:
            planted += 1
            caught += dropped
        elif entry.duplicate_of == "near":
            near += 1
            near_caught += dropped
    out["paraphrases_planted"] = planted
    out["paraphrases_caught"] = caught
    out["paraphrases_in_dataset"] = leaked
    if planted:
        out["contamination_recall"] = caught / planted
    out["near_duplicates_planted"] = near
    if near:
        out["near_duplicate_recall"] = near_caught / near
    return out


def round_files(run_dir: str | Path, round_index: int) -> tuple[list[Problem], list[Problem]]:
    """(candidates, kept) that round `round_index` of a run left on disk."""
    folder = Path(run_dir) / f"round-{round_index}"
    candidates = [
        Problem.model_validate(row)
        for path in sorted(folder.glob("synth-*/shard-*.jsonl"))
        for row in read_jsonl(path)
    ]
    filtered = sorted(folder.glob("filtered-*.jsonl"), key=lambda p: p.stat().st_mtime)
    kept = [Problem.model_validate(row) for row in read_jsonl(filtered[-1])] if filtered else []
    return candidates, kept


def run_round_metrics(
    world: World, run_dir: str | Path, round_index: int, dataset: DatasetRef
) -> dict[str, float]:
    """`lab_metrics` for one finished round of a run (round 0 synthesizes nothing: {})."""
    if round_index == 0:
        return {}
    from fdd_core.store import read_examples

    candidates, kept = round_files(run_dir, round_index)
    new = [e for e in read_examples(dataset) if e.round == round_index]
    return lab_metrics(world, candidates, kept, new)
