"""Records that flow through an FDD run: problems, rationales, examples and references.

Everything here is a small frozen pydantic model. Ids are content hashes so that the same
problem or program always gets the same id, whichever run, shard or machine produced it.
Tasks pass `DatasetRef` / `ModelRef` (paths plus ids), never whole datasets.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Origin = Literal["original", "complex", "similar"]

_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Canonical form of a question for hashing and exact-duplicate checks.

    Unicode NFKC, lower case, whitespace collapsed. Punctuation is kept: "5.5" and "55"
    must stay different questions.
    """
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()


def content_hash(*parts: str, length: int = 16) -> str:
    """Stable hex digest of the given strings (separated so ("ab","c") != ("a","bc"))."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()[:length]


def problem_id(question: str) -> str:
    """Id of a problem: a hash of its normalized question text."""
    return "p-" + content_hash(normalize_text(question))


def rationale_id(pid: str, program: str) -> str:
    return "r-" + content_hash(pid, program.strip())


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Problem(_Frozen):
    """A math word problem. `answer` is None for generated problems not yet labelled."""

    id: str
    question: str
    answer: float | None = None
    origin: Origin = "original"
    parent_id: str | None = None
    round: int = 0
    source_dataset: str = ""

    @classmethod
    def create(
        cls,
        question: str,
        answer: float | None = None,
        *,
        origin: Origin = "original",
        parent_id: str | None = None,
        round: int = 0,
        source_dataset: str = "",
    ) -> Problem:
        question = question.strip()
        return cls(
            id=problem_id(question),
            question=question,
            answer=answer,
            origin=origin,
            parent_id=parent_id,
            round=round,
            source_dataset=source_dataset,
        )


class Rationale(_Frozen):
    """A Program-of-Thought rationale: a program whose variable `ans` holds the answer."""

    problem_id: str
    program: str
    answer: float | None
    teacher: str
    prompt_version: str
    sample_index: int = 0

    @property
    def id(self) -> str:
        return rationale_id(self.problem_id, self.program)


class Example(_Frozen):
    """One training row: a problem joined with one verified rationale."""

    id: str
    problem_id: str
    question: str
    answer: float
    program: str
    origin: Origin
    parent_id: str | None = None
    round: int = 0
    source_dataset: str = ""
    teacher: str = ""
    prompt_version: str = ""

    @classmethod
    def join(cls, problem: Problem, rationale: Rationale) -> Example:
        if rationale.problem_id != problem.id:
            raise ValueError(
                f"rationale for {rationale.problem_id} cannot be joined to problem {problem.id}"
            )
        answer = problem.answer if problem.answer is not None else rationale.answer
        if answer is None:
            raise ValueError(f"problem {problem.id} has no answer to train on")
        return cls(
            id=rationale.id,
            problem_id=problem.id,
            question=problem.question,
            answer=answer,
            program=rationale.program,
            origin=problem.origin,
            parent_id=problem.parent_id,
            round=problem.round,
            source_dataset=problem.source_dataset,
            teacher=rationale.teacher,
            prompt_version=rationale.prompt_version,
        )

    def problem(self) -> Problem:
        """The problem this example was joined from (its labelled answer included)."""
        return Problem(
            id=self.problem_id,
            question=self.question,
            answer=self.answer,
            origin=self.origin,
            parent_id=self.parent_id,
            round=self.round,
            source_dataset=self.source_dataset,
        )


class DatasetRef(_Frozen):
    """A reference to an immutable dataset version on disk (what tasks pass around)."""

    path: str
    version_id: str
    n_rows: int = Field(ge=0)


class ModelRef(_Frozen):
    """A trained student (full checkpoint or LoRA adapter) and what made it."""

    path: str
    base_model: str
    dataset_version: str | None = None
    adapter: bool = False
