"""Prompts: versioned teacher templates and the student's plain-text prompt format.

Teacher prompts live as YAML files in fdd_core/prompts/ (package data), one per task:

- ``program``: few-shot Program-of-Thought; the teacher writes a program ending in `ans`;
- ``complex``: `n` harder variations of a problem the student solved;
- ``similar``: `n` new problems of similar difficulty for a problem the student failed.

Each file declares a name, a version string (recorded on every generated row and part of
the teacher request cache key: bump it on any change), its inputs, an optional system
message and the text. Placeholders are written ``{{name}}`` so that Python code and JSON
in a prompt need no escaping. Loading checks that the placeholders used equal the declared
inputs; rendering checks that exactly the declared inputs are given, and substitutes in
one pass (a question containing ``{{n}}`` is left as it is).

The student sees no template file: `student_prompt` is a plain string format with its own
version constant, because the same format is used for training and evaluation.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "PromptError",
    "PromptTemplate",
    "STUDENT_PROMPT_VERSION",
    "STUDENT_STOP",
    "TEMPLATE_NAMES",
    "complex_messages",
    "load_template",
    "parse_template",
    "program_messages",
    "similar_messages",
    "student_prompt",
]

STUDENT_PROMPT_VERSION = "student-v1"
# Where a student's program ends when it runs on into an invented next problem.
STUDENT_STOP = ("\nQuestion:",)
TEMPLATE_NAMES = ("program", "complex", "similar")

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REQUIRED = ("name", "version", "inputs", "text")
_OPTIONAL = ("system", "description")


class PromptError(ValueError):
    """A template file is malformed, or a template was rendered with the wrong inputs."""


def student_prompt(question: str) -> str:
    """The plain-text prompt a student is trained on and evaluated with."""
    return (
        f"Question: {question.strip()}\n# Python program that stores the final answer in `ans`:\n"  # noqa: E501
    )


@dataclass(frozen=True)
class PromptTemplate:
    """A versioned prompt with declared `{{placeholder}}` inputs."""

    name: str
    version: str
    inputs: tuple[str, ...]
    system: str | None
    text: str
    description: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        used = _placeholders(self.text) | _placeholders(self.system or "")
        declared = set(self.inputs)
        where = self.source or f"template {self.name!r}"
        if len(declared) != len(self.inputs):
            raise PromptError(f"{where}: field 'inputs' lists a name twice: {list(self.inputs)}")
        if used != declared:
            raise PromptError(
                f"{where}: placeholders in the text {sorted(used)} do not match the declared "
                f"inputs {sorted(declared)} (missing from text: {sorted(declared - used)}, "
                f"undeclared: {sorted(used - declared)})"
            )
        for part, label in ((self.text, "text"), (self.system or "", "system")):
            stray = _PLACEHOLDER.sub("", part)
            if "{{" in stray or "}}" in stray:
                raise PromptError(
                    f"{where}: field '{label}' has a malformed placeholder; write {{{{name}}}} "
                    "with a Python identifier as the name"
                )

    @property
    def fingerprint(self) -> str:
        """Hash of everything the model sees (tests pin it to the version)."""
        blob = f"{self.system or ''}\x1f{self.text}"
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def _check_inputs(self, kw: dict[str, Any]) -> None:
        missing = [k for k in self.inputs if k not in kw]
        extra = sorted(set(kw) - set(self.inputs))
        if missing or extra:
            raise PromptError(
                f"template {self.name!r} ({self.version}) takes inputs {list(self.inputs)}; "
                f"missing: {missing}, not declared: {extra}"
            )
        nones = [k for k, v in kw.items() if v is None]
        if nones:
            raise PromptError(f"template {self.name!r}: inputs {nones} are None")

    def render(self, **kw: Any) -> str:
        """The text with every placeholder replaced (values through str())."""
        self._check_inputs(kw)
        return _substitute(self.text, kw)

    def render_system(self, **kw: Any) -> str | None:
        self._check_inputs(kw)
        return None if self.system is None else _substitute(self.system, kw)

    def messages(self, **kw: Any) -> list[dict[str, str]]:
        """Chat messages: the system message (if any), then the rendered text as the user."""
        system = self.render_system(**kw)
        out = [] if system is None else [{"role": "system", "content": system}]
        out.append({"role": "user", "content": self.render(**kw)})
        return out


def _placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))


def _substitute(text: str, values: dict[str, Any]) -> str:
    # One pass: text inserted for a placeholder is never scanned again.
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


# ----------------------------------------------------------------------------- loading


def parse_template(data: Any, source: str) -> PromptTemplate:
    """Validate a parsed YAML mapping and build a template; errors name the field."""
    if not isinstance(data, dict):
        raise PromptError(
            f"{source}: expected a mapping with fields {list(_REQUIRED)}, got {type(data).__name__}"
        )
    unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise PromptError(
            f"{source}: unknown fields {unknown}; allowed: {list(_REQUIRED + _OPTIONAL)}"
        )
    for key in _REQUIRED:
        if key not in data:
            raise PromptError(f"{source}: field '{key}' is missing")
    for key in ("name", "version", "text"):
        if not isinstance(data[key], str) or not data[key].strip():
            raise PromptError(
                f"{source}: field '{key}' must be a non-empty string, got {data[key]!r}"
            )
    inputs = data["inputs"]
    if not isinstance(inputs, list) or not all(
        isinstance(i, str) and _IDENTIFIER.fullmatch(i) for i in inputs
    ):
        raise PromptError(f"{source}: field 'inputs' must be a list of identifiers, got {inputs!r}")
    system = data.get("system")
    if system is not None and not isinstance(system, str):
        raise PromptError(f"{source}: field 'system' must be a string, got {system!r}")
    description = data.get("description") or ""
    return PromptTemplate(
        name=data["name"],
        version=data["version"],
        inputs=tuple(inputs),
        system=system,
        text=data["text"],
        description=str(description),
        source=source,
    )


def _read_template_file(path: Path | Any, source: str) -> PromptTemplate:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise PromptError(f"{source}: not valid YAML{at}: {exc}") from None
    return parse_template(data, source)


@functools.cache
def _builtin(name: str) -> PromptTemplate:
    resource = resources.files("fdd_core") / "prompts" / f"{name}.yaml"
    template = _read_template_file(resource, f"fdd_core/prompts/{name}.yaml")
    if template.name != name:
        raise PromptError(
            f"fdd_core/prompts/{name}.yaml: field 'name' is {template.name!r}, expected {name!r}"
        )
    return template


def load_template(name: str) -> PromptTemplate:
    """A built-in template by name ("program", "complex", "similar") or a .yaml path.

    Built-ins are read once per process; a path is read on every call.
    """
    if name in TEMPLATE_NAMES:
        return _builtin(name)
    path = Path(name).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return _read_template_file(path, str(path))
    raise PromptError(
        f"unknown prompt template {name!r}: expected one of "
        f"{', '.join(TEMPLATE_NAMES)} or a path to a .yaml template file"
    )


# ------------------------------------------------------------------------- messages


def program_messages(question: str) -> list[dict[str, str]]:
    """Chat messages asking the teacher for one program (template 'program')."""
    return load_template("program").messages(question=question.strip())


PROGRAM_FENCE = "```python\n"


def program_completion_prompt(question: str) -> str:
    """The program prompt as raw text that ends inside an open ```python fence.

    For completion-style use (small or base models, which continue a few-shot pattern far
    more reliably than they follow a chat instruction): the model writes the program body
    and stops at the closing fence. Prepend PROGRAM_FENCE to the output before parsing.
    """
    template = load_template("program")
    system = template.render_system(question=question.strip()) if template.system else ""
    text = template.render(question=question.strip())
    return (system + "\n\n" if system else "") + text + "\n" + PROGRAM_FENCE


def _count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise PromptError(f"n must be an integer >= 1, got {n!r}")
    return n


def complex_messages(question: str, n: int) -> list[dict[str, str]]:
    """Chat messages asking for `n` harder variations (template 'complex')."""
    return load_template("complex").messages(question=question.strip(), n=_count(n))


def similar_messages(question: str, n: int) -> list[dict[str, str]]:
    """Chat messages asking for `n` problems of similar difficulty (template 'similar')."""
    return load_template("similar").messages(question=question.strip(), n=_count(n))
