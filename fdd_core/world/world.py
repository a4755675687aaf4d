"""The world: seeded splits of structured problems, and an index from question text back to
structure, so anything in the world (the simulated teacher, the lab's evaluator) can tell
what a question means and what its true answer is.

Splits (`World.splits`): ``train`` originals (1-3 steps, mostly 1-2), ``test`` (the same
distribution: the in-distribution test set) and ``hard`` (4-5 steps: more than any original
has). Every question is unique across the splits. Problems the simulated teacher writes are
added with `register` and may be appended to a ledger (JSON lines) that `load_ledger` reads
back in another process.

The lab's split files are committed under fdd_core/data/lab/ (like the embedded set):

    python -m fdd_core.world --check   # files equal the generator's output?
    python -m fdd_core.world --write   # regenerate them
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path

from fdd_core.schemas import normalize_text
from fdd_core.world.structure import Structure, random_structure

SEED = 20261202
SIZES = {"train": 40, "test": 30, "hard": 30}
DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "lab"
FILES = {"train": "lab_train.jsonl", "test": "lab_test.jsonl", "hard": "lab_hard.jsonl"}
# Steps per split: (n steps, weight). Originals and the in-distribution test set share one.
STEP_WEIGHTS = {"train": {1: 4, 2: 4, 3: 2}, "test": {1: 4, 2: 4, 3: 2}, "hard": {4: 3, 5: 2}}
DISTRACTOR_SHARE = 0.2


@dataclass(frozen=True)
class Entry:
    """What the world knows about one question."""

    question: str
    structure: Structure
    split: str  # train | test | hard | synthetic
    # Set on problems the simulated teacher wrote:
    paraphrase_of: str | None = None  # the test question this plants a paraphrase of
    duplicate_of: str | None = None  # "exact" | "near" when it copies another question
    disagree: bool = False  # the teacher's programs for it disagree (a fault dial)

    @property
    def answer(self) -> int:
        return self.structure.answer()

    def row(self) -> dict:
        return {
            "question": self.question,
            "answer": self.answer,
            "steps": self.structure.n_steps,
            "distractors": len(self.structure.distractors),
            "story": self.structure.story,
        }

    def ledger_row(self) -> dict:
        return {
            "question": self.question,
            "structure": self.structure.to_dict(),
            "split": self.split,
            "paraphrase_of": self.paraphrase_of,
            "duplicate_of": self.duplicate_of,
            "disagree": self.disagree,
        }


@dataclass
class World:
    """The seeded world; `lookup` maps any question it knows to its `Entry`."""

    seed: int = SEED
    sizes: dict[str, int] = field(default_factory=lambda: dict(SIZES))
    splits: dict[str, list[Entry]] = field(init=False)
    _index: dict[str, Entry] = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._index = {}
        self.splits = generate_splits(self.seed, self.sizes)
        for entries in self.splits.values():
            for e in entries:
                self._index[normalize_text(e.question)] = e

    def lookup(self, question: str) -> Entry | None:
        return self._index.get(normalize_text(question))

    def register(self, entry: Entry, ledger: Path | None = None) -> Entry:
        """Add a question the teacher wrote; the first entry for a question wins."""
        key = normalize_text(entry.question)
        with self._lock:
            known = self._index.get(key)
            if known is not None:
                return known
            self._index[key] = entry
            if ledger is not None:
                ledger.parent.mkdir(parents=True, exist_ok=True)
                with open(ledger, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry.ledger_row(), ensure_ascii=False) + "\n")
        return entry

    def load_ledger(self, path: str | Path) -> int:
        """Register every problem in a ledger file; returns how many were new."""
        path = Path(path)
        if not path.is_file():
            return 0
        n = 0
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                entry = Entry(
                    question=row["question"],
                    structure=Structure.from_dict(row["structure"]),
                    split=row.get("split", "synthetic"),
                    paraphrase_of=row.get("paraphrase_of"),
                    duplicate_of=row.get("duplicate_of"),
                    disagree=bool(row.get("disagree")),
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}, line {i}: not a world ledger row ({exc})") from None
            if self.register(entry) is entry:
                n += 1
        return n

    def test_questions(self) -> list[Entry]:
        return [*self.splits["test"], *self.splits["hard"]]


def generate_splits(
    seed: int = SEED, sizes: dict[str, int] | None = None
) -> dict[str, list[Entry]]:
    sizes = sizes or SIZES
    rng = random.Random(seed)
    seen: set[str] = set()
    out: dict[str, list[Entry]] = {}
    for split in ("train", "test", "hard"):
        weights = STEP_WEIGHTS[split]
        rows: list[Entry] = []
        while len(rows) < sizes.get(split, 0):
            n_steps = rng.choices(list(weights), weights=list(weights.values()))[0]
            n_distractors = 1 if rng.random() < DISTRACTOR_SHARE else 0
            s = random_structure(rng, n_steps, n_distractors)
            q = s.render()
            if normalize_text(q) in seen:
                continue
            seen.add(normalize_text(q))
            rows.append(Entry(q, s, split))
        out[split] = rows
    return out


def render_split(entries: list[Entry]) -> str:
    return "".join(json.dumps(e.row(), ensure_ascii=False) + "\n" for e in entries)


def check(data_dir: Path = DATA_DIR) -> list[str]:
    """Differences between the committed lab files and the generator's output."""
    problems = []
    for split, entries in generate_splits().items():
        path = data_dir / FILES[split]
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != render_split(entries):
            problems.append(f"{path}: differs from the generator's output")
    return problems


def write(data_dir: Path = DATA_DIR) -> list[Path]:
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, entries in generate_splits().items():
        path = data_dir / FILES[split]
        path.write_text(render_split(entries), encoding="utf-8")
        paths.append(path)
    return paths
