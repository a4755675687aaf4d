"""Benchmarks described as data: one YAML file per benchmark, loaded into `BenchmarkSpec`.

After lm-evaluation-harness's task files: a spec names the loader and split, where the
file usually lives, the prompt template the student sees, the generation settings (token
budget, stop strings; decoding is greedy), how the answer is read ("program": extract the
program, run it in the sandbox, read `ans`) and a version that is bumped on any change, so
a score always says which definition produced it.

The specs are the one list of benchmarks: evaluation, decontamination and preflight all
resolve a name here (`fdd_core.data.load_benchmark` is `load_spec` + `load_problems`).
They are found on a search path: the packaged fdd_core/benchmarks/*.yaml (gsm8k, svamp,
asdiv, multiarith, embedded) first, then every folder in the environment variable
``FDD_BENCHMARK_PATH`` (os.pathsep-separated), then folders added with
`add_benchmark_dir`. Adding a benchmark is one ``<name>.yaml`` file in one of them; its
`loader` names a file format of fdd_core.data (a new format also needs
`fdd_core.data.register_loader`). `load_spec` also accepts a path: a ``.jsonl`` file of
``{question, answer}`` rows becomes an ad-hoc benchmark with default settings, and a
``.yaml`` file is read as a user-written spec.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fdd_core.backends.base import SamplingParams
from fdd_core.data import (
    DataFormatError,
    LoadResult,
    load_jsonl,
    load_source,
    loader_names,
)
from fdd_core.prompts import STUDENT_PROMPT_VERSION, STUDENT_STOP, student_prompt

__all__ = [
    "PROMPTS",
    "SEARCH_PATH_ENV",
    "BenchmarkSpec",
    "GenerationSpec",
    "add_benchmark_dir",
    "benchmark_dirs",
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
    loader: str = Field(
        description="File format (a loader of fdd_core.data): gsm8k, svamp, asdiv, "
        "multiarith, embedded, jsonl, or one added with register_loader."
    )
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

    @field_validator("loader")
    @classmethod
    def _known_loader(cls, value: str) -> str:
        if value not in loader_names():
            raise ValueError(f"unknown loader {value!r}; known: {', '.join(loader_names())}")
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


SEARCH_PATH_ENV = "FDD_BENCHMARK_PATH"
_EXTRA_DIRS: list[Path] = []


def add_benchmark_dir(folder: str | Path) -> None:
    """Search `folder` for ``<name>.yaml`` benchmark specs too (after the packaged ones)."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"benchmark folder not found: {path}")
    if path not in _EXTRA_DIRS:
        _EXTRA_DIRS.append(path)


def remove_benchmark_dir(folder: str | Path) -> None:
    """Undo `add_benchmark_dir` (tests use it)."""
    path = Path(folder).expanduser()
    if path in _EXTRA_DIRS:
        _EXTRA_DIRS.remove(path)


def benchmark_dirs() -> list:
    """The search path, in order: packaged specs, $FDD_BENCHMARK_PATH, added folders."""
    env = [Path(p).expanduser() for p in os.environ.get(SEARCH_PATH_ENV, "").split(os.pathsep)]
    return [resources.files("fdd_core") / "benchmarks", *[p for p in env if str(p) != "."]] + [
        *_EXTRA_DIRS
    ]


def _spec_files() -> dict[str, object]:
    """name -> spec file; the first folder on the search path that has a name wins."""
    found: dict[str, object] = {}
    for folder in benchmark_dirs():
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir(), key=lambda q: q.name):
            if p.name.endswith(".yaml"):
                found.setdefault(p.name[: -len(".yaml")], p)
    return found


def list_specs() -> list[str]:
    """Names of every benchmark spec on the search path."""
    return sorted(_spec_files())


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


def _named(name: str, res) -> BenchmarkSpec:
    text = res.read_text(encoding="utf-8")
    return _parsed(name, str(res), text)


@functools.cache
def _parsed(name: str, where: str, text: str) -> BenchmarkSpec:
    shown = f"fdd_core/benchmarks/{name}.yaml" if "fdd_core" in where else where
    spec = _parse(text, shown)
    if spec.name != name:
        raise ValueError(f"{shown}: its name is {spec.name!r}, the file name says {name!r}")
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
    files = _spec_files()
    if text in files:
        return _named(text, files[text])
    path = Path(text).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return _parse(path.read_text(encoding="utf-8"), str(path))
    if path.suffix == ".jsonl" or path.is_file():
        return jsonl_spec(path)
    raise DataFormatError(
        f"unknown benchmark {text!r}: expected one of {', '.join(sorted(files))}, a .jsonl "
        "file of {question, answer} rows, or a .yaml benchmark spec (add your own specs with "
        f"${SEARCH_PATH_ENV} or fdd_core.benchmarks.add_benchmark_dir)"
    )


def load_problems(
    spec: BenchmarkSpec,
    path: str | Path | None = None,
    *,
    limit: int | None = None,
    strict: bool = True,
    split: Literal["train", "test"] | None = None,
) -> LoadResult:
    """The spec's problems: from `path` if given, else the spec's own file, else the
    packaged set (embedded) or the hub (public benchmarks, needs a network).
    `split` overrides the spec's split."""
    from fdd_core.config import DataSource

    source = path or spec.path
    if spec.loader == "jsonl":
        if not source:
            raise ValueError(f"benchmark {spec.name!r} reads a JSONL file but names none")
        result = load_jsonl(source, strict=strict)
        if limit is not None and len(result.problems) > limit:
            result = LoadResult(result.problems[:limit], dict(result.skipped), result.source)
        return result
    data_source = DataSource(
        name=spec.loader,
        path=str(source) if source else None,
        split=split or spec.split,
        limit=limit,
    )
    return load_source(data_source, strict=strict)
