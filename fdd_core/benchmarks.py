"""Benchmarks described as data: one YAML file per benchmark, loaded into `BenchmarkSpec`.

After lm-evaluation-harness's task files: a spec names the loader and split, where the
file usually lives, the prompt template the student sees, the generation settings (token
budget, stop strings; decoding is greedy), how the answer is read ("program": extract the
program, run it in the sandbox, read `ans`) and a version that is bumped on any change, so
a score always says which definition produced it.

The packaged specs live in fdd_core/benchmarks/*.yaml (gsm8k, svamp, asdiv, multiarith,
embedded). `load_spec` also accepts a path: a ``.jsonl`` file of ``{question, answer}``
rows becomes an ad-hoc benchmark with default settings, and a ``.yaml`` file is read as a
user-written spec.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fdd_core.backends.base import SamplingParams
from fdd_core.data import LoadResult, load_benchmark
from fdd_core.prompts import STUDENT_PROMPT_VERSION, STUDENT_STOP, student_prompt

__all__ = [
    "PROMPTS",
    "BenchmarkSpec",
    "GenerationSpec",
    "list_specs",
    "load_problems",
    "load_spec",
]

# Prompt template name -> function of the question. The student is trained with the same.
PROMPTS: dict[str, Callable[[str], str]] = {STUDENT_PROMPT_VERSION: student_prompt}


class GenerationSpec(BaseModel):
    """How the student generates on this benchmark (always greedy: one program each)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(256, ge=1, le=32768, description="New tokens per program.")
    stop: tuple[str, ...] = Field(STUDENT_STOP, description="Strings that end a program.")


class BenchmarkSpec(BaseModel):
    """One benchmark, as a YAML file describes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Short name; results are filed under it.")
    description: str = ""
    loader: Literal["gsm8k", "svamp", "asdiv", "multiarith", "embedded", "jsonl"]
    split: Literal["train", "test"] = "test"
    path: str | None = Field(
        None, description="The data file (required for 'jsonl'); None: packaged set or hub."
    )
    path_hint: str | None = Field(
        None, description="Where the file usually lives (shown in messages, never read)."
    )
    prompt: str = STUDENT_PROMPT_VERSION
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    answer_extraction: Literal["program"] = "program"
    version: int = Field(ge=1, description="Bumped on any change to this spec.")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError(
                f"name must be letters, digits, '_', '.', '-' (it names a folder), got {value!r}"
            )
        return value

    @field_validator("prompt")
    @classmethod
    def _known_prompt(cls, value: str) -> str:
        if value not in PROMPTS:
            raise ValueError(f"unknown prompt {value!r}; known: {', '.join(sorted(PROMPTS))}")
        return value

    def render(self, question: str) -> str:
        """The prompt the student sees for `question`."""
        return PROMPTS[self.prompt](question)

    def sampling(self, max_tokens: int | None = None) -> SamplingParams:
        """Greedy decoding with this spec's budget (or `max_tokens`) and stop strings."""
        return SamplingParams(
            n=1,
            temperature=0.0,
            max_tokens=max_tokens or self.generation.max_tokens,
            stop=self.generation.stop,
        )


def _spec_dir():
    return resources.files("fdd_core") / "benchmarks"


def list_specs() -> list[str]:
    """Names of the packaged benchmark specs."""
    return sorted(
        p.name[: -len(".yaml")] for p in _spec_dir().iterdir() if p.name.endswith(".yaml")
    )


def _parse(text: str, source: str) -> BenchmarkSpec:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(  # noqa: TRY004 - a malformed file is a value problem for the user
            f"{source}: expected a mapping of spec fields, got {type(data).__name__}"
        )
    try:
        return BenchmarkSpec.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in err.errors()
        )
        raise ValueError(f"{source}: invalid benchmark spec: {problems}") from None


@functools.cache
def _packaged(name: str) -> BenchmarkSpec:
    res = _spec_dir() / f"{name}.yaml"
    spec = _parse(res.read_text(encoding="utf-8"), f"fdd_core/benchmarks/{name}.yaml")
    if spec.name != name:
        raise ValueError(f"fdd_core/benchmarks/{name}.yaml: its name is {spec.name!r}")
    return spec


def jsonl_spec(path: str | Path) -> BenchmarkSpec:
    """An ad-hoc benchmark for a user's JSONL file of {question, answer} rows."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"benchmark file not found: {p}")
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", p.stem).lstrip("._-") or "jsonl"
    return BenchmarkSpec(
        name=name, description=f"user file {p}", loader="jsonl", path=str(p), version=1
    )


def load_spec(name_or_path: str | Path) -> BenchmarkSpec:
    """A packaged spec by name, a user JSONL file (ad-hoc spec) or a user YAML spec file."""
    text = str(name_or_path)
    if text in list_specs():
        return _packaged(text)
    path = Path(text).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return _parse(path.read_text(encoding="utf-8"), str(path))
    if path.suffix == ".jsonl" or path.is_file():
        return jsonl_spec(path)
    raise ValueError(
        f"unknown benchmark {text!r}: expected one of {', '.join(list_specs())}, a .jsonl file "
        "of {question, answer} rows, or a .yaml benchmark spec"
    )


def load_problems(
    spec: BenchmarkSpec,
    path: str | Path | None = None,
    *,
    limit: int | None = None,
    strict: bool = True,
) -> LoadResult:
    """The spec's problems: from `path` if given, else the spec's own file, else the
    packaged set (embedded) or the hub (public benchmarks, needs a network)."""
    source = path or spec.path
    if spec.loader == "jsonl":
        if not source:
            raise ValueError(f"benchmark {spec.name!r} reads a JSONL file but names none")
        return load_benchmark(str(source), split=spec.split, limit=limit, strict=strict)
    return load_benchmark(spec.loader, source, split=spec.split, limit=limit, strict=strict)
