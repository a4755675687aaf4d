"""Loaders that turn benchmark files into `Problem` records.

One loader per format (GSM8K JSONL, SVAMP JSON, ASDiv XML, MultiArith JSON, generic
``{"question", "answer"}`` JSONL, the embedded set), plus `load_source` / `load_benchmark`
that pick a loader from a config entry or a benchmark name and fall back to the Hugging
Face hub when no local file is given.

Every loader returns a `LoadResult`: the problems in file order (nothing is deduplicated
here; that is the filter's job), the rows skipped by reason, and where they came from.
A malformed row raises `DataFormatError` naming the file, the line (JSONL) or element
index (JSON, XML), the field and what was expected; with ``strict=False`` it is skipped
and counted under its reason instead. ASDiv problems whose answer is not one number
(ratios such as "2:3", "yes", several values) are part of the corpus, not damage: they are
always skipped and counted under ``"non_numeric_answer"``.

XML is read with the standard library's expat parser, which refuses external entities
and, since expat 2.4.1, limits entity expansion ("billion laughs"); it is meant for
benchmark files, not hostile input.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from fdd_core.config import DataSource
from fdd_core.schemas import Problem

__all__ = [
    "DataFileNotFoundError",
    "DataFormatError",
    "DataUnavailableError",
    "HUB_DATASETS",
    "LOADERS",
    "LoadResult",
    "embedded_path",
    "load_asdiv",
    "load_benchmark",
    "load_embedded",
    "load_gsm8k",
    "load_jsonl",
    "load_multiarith",
    "load_source",
    "load_svamp",
    "loader_names",
    "register_loader",
]


class DataFormatError(ValueError):
    """A data file (or hub split) does not have the expected shape; the message says where."""


class DataFileNotFoundError(FileNotFoundError):
    """A data file named in a config or call does not exist."""

    def __init__(self, path: Path, what: str = "data file") -> None:
        super().__init__(f"{what} not found: {path}")
        self.filename = str(path)


class DataUnavailableError(RuntimeError):
    """A benchmark could not be fetched from the hub (usually: no network)."""


@dataclass
class LoadResult:
    """Problems from one source, in source order, and the rows that were skipped."""

    problems: list[Problem]
    skipped: dict[str, int] = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return len(self.problems)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())


# ----------------------------------------------------------------------------- numbers

_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_GROUPED_NUMBER = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_FRACTION = re.compile(r"([+-]?\d+)\s*/\s*(\d+)")


def _to_number(value: Any) -> float | None:
    """A finite number from a JSON/XML value, or None.

    Accepts ints and floats (not bools) and strings holding one number: "12", "-3.5",
    "1,234" (correctly grouped thousands), "$5" and simple fractions "3/4". Anything else
    ("2:3", "yes", "5 or 6", "12,34", NaN, infinity) is None.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
        return number if math.isfinite(number) else None
    if not isinstance(value, str):
        return None
    text = value.strip().removeprefix("$").strip()
    if _PLAIN_NUMBER.fullmatch(text) or _GROUPED_NUMBER.fullmatch(text):
        number = float(text.replace(",", ""))
        return number if math.isfinite(number) else None
    match = _FRACTION.fullmatch(text)
    if match and int(match.group(2)) != 0:
        return float(Fraction(int(match.group(1)), int(match.group(2))))
    return None


# ------------------------------------------------------------------------ row handling


class _RowError(Exception):
    """A problem with one row: the field, the reason key for `skipped`, and the details."""

    def __init__(self, field_name: str, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.field_name = field_name
        self.reason = reason
        self.detail = detail


class _Skip(Exception):
    """A row that is skipped in every mode (counted under `reason`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _short(value: Any, limit: int = 60) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _get_field(record: Any, names: tuple[str, ...]) -> Any:
    """The first of `names` present in a mapping record (hub copies rename columns)."""
    if not isinstance(record, dict):
        raise _RowError(
            names[0],
            "not_an_object",
            f"expected an object with field '{names[0]}', got {type(record).__name__}",
        )
    for name in names:
        if name in record and record[name] is not None:
            return record[name]
    raise _RowError(names[0], "missing_field", "field is missing")


def _text_field(record: Any, *names: str) -> str:
    value = _get_field(record, names)
    if not isinstance(value, str):
        raise _RowError(names[0], "bad_field_type", f"expected a string, got {_short(value)}")
    return value.strip()


def _question(text: str, field_name: str = "question") -> str:
    if not text.strip():
        raise _RowError(field_name, "empty_question", "expected a non-empty question text")
    return text.strip()


def _number_field(record: Any, *names: str) -> float:
    value = _get_field(record, names)
    number = _to_number(value)
    if number is None:
        raise _RowError(names[0], "non_numeric_answer", f"expected a number, got {_short(value)}")
    return number


# Each row parser maps one record to (question, answer) or raises _RowError / _Skip.
RowParser = Callable[[Any], "tuple[str, float]"]


def _collect(
    rows: Iterable[tuple[str, Any]],
    parse: RowParser,
    *,
    where: str,
    dataset: str,
    strict: bool,
) -> LoadResult:
    """Parse located rows into problems, raising or counting failures.

    `rows` yields (location, record); a record that is itself a `_RowError` stands for a
    row that could not even be decoded (bad JSON).
    """
    problems: list[Problem] = []
    skipped: dict[str, int] = {}
    for location, record in rows:
        try:
            if isinstance(record, _RowError):
                raise record
            question, answer = parse(record)
        except _Skip as skip:
            skipped[skip.reason] = skipped.get(skip.reason, 0) + 1
            continue
        except _RowError as err:
            if strict:
                raise DataFormatError(
                    f"{where}: {location}: field '{err.field_name}': {err.detail}"
                    " (pass strict=False, or set data.strict: false, to skip bad rows)"
                ) from None
            skipped[err.reason] = skipped.get(err.reason, 0) + 1
            continue
        problems.append(Problem.create(question, answer, source_dataset=dataset))
    if not problems:
        detail = f" (skipped: {skipped})" if skipped else ""
        raise DataFormatError(f"{where}: no problems found{detail}")
    return LoadResult(problems=problems, skipped=skipped, source=f"{dataset}:{where}")


def _existing(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataFileNotFoundError(p)
    return p


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text ({exc})") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(\"line N\", record) for each non-blank line; undecodable lines become _RowError."""
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record: Any = json.loads(line)
        except json.JSONDecodeError as exc:
            record = _RowError("(line)", "invalid_json", f"not valid JSON ({exc.msg})")
        yield f"line {number}", record


def _json_list(path: Path) -> list[Any]:
    text = _read_text(path)
    if not text.strip():
        raise DataFormatError(f"{path}: the file is empty (expected a JSON list of problems)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(
            f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(data, list):
        raise DataFormatError(
            f"{path}: expected a JSON list of problems at the top level, got {type(data).__name__}"
        )
    return data


def _element_rows(items: list[Any], label: Callable[[Any], str] | None = None):
    for index, item in enumerate(items):
        extra = label(item) if label else ""
        yield f"element {index}{extra}", item


# ------------------------------------------------------------------------------ GSM8K

_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$")


def _parse_gsm8k(record: Any) -> tuple[str, float]:
    question = _question(_text_field(record, "question"))
    solution = _text_field(record, "answer")
    match = _GSM8K_FINAL.search(solution)
    if match is None:
        raise _RowError(
            "answer",
            "missing_final_answer",
            f"expected the solution to end with '#### <number>', got {_short(solution[-40:])}",
        )
    number = _to_number(match.group(1))
    if number is None:
        raise _RowError(
            "answer",
            "non_numeric_answer",
            f"expected a number after '####', got {_short(match.group(1))}",
        )
    return question, number


def load_gsm8k(path: str | Path, *, strict: bool = True) -> LoadResult:
    """GSM8K JSONL: {"question", "answer"}, the answer's last line is "#### N"."""
    p = _existing(path)
    return _collect(_jsonl_rows(p), _parse_gsm8k, where=str(p), dataset="gsm8k", strict=strict)


# ------------------------------------------------------------------------------ SVAMP


def _join(body: str, question: str) -> str:
    return f"{body.strip()} {question.strip()}".strip()


def _parse_svamp(record: Any) -> tuple[str, float]:
    body = _text_field(record, "Body", "body")
    question = _text_field(record, "Question", "question")
    if not question:
        raise _RowError("Question", "empty_question", "expected a non-empty question")
    return _join(body, question), _number_field(record, "Answer", "answer")


def _svamp_label(item: Any) -> str:
    return f" (ID {item['ID']})" if isinstance(item, dict) and "ID" in item else ""


def load_svamp(path: str | Path, *, strict: bool = True) -> LoadResult:
    """SVAMP JSON list of {ID, Body, Question, Equation, Answer, Type}; text = Body + Question."""
    p = _existing(path)
    rows = _element_rows(_json_list(p), _svamp_label)
    return _collect(rows, _parse_svamp, where=str(p), dataset="svamp", strict=strict)


# ------------------------------------------------------------------------------ ASDiv

_UNIT = re.compile(r"^(.*?)\s*\(([^()]*)\)\s*$")


def _asdiv_answer(raw: str) -> float:
    """'9 (apples)' -> 9.0; ratios, words or several values -> skipped as non-numeric."""
    text = raw.strip()
    match = _UNIT.match(text)
    if match:
        text = match.group(1)
    number = _to_number(text)
    if number is None:
        raise _Skip("non_numeric_answer")
    return number


def _parse_asdiv(record: Any) -> tuple[str, float]:
    body = _text_field(record, "Body", "body")
    question = _text_field(record, "Question", "question")
    if not question:
        raise _RowError("Question", "empty_question", "expected a non-empty question")
    raw_answer = _text_field(record, "Answer", "answer")
    if not raw_answer:
        raise _RowError("Answer", "missing_field", "expected an answer such as '9 (apples)'")
    return _join(body, question), _asdiv_answer(raw_answer)


def _asdiv_records(path: Path) -> list[dict[str, Any]]:
    try:
        root = ET.fromstring(_read_text(path))
    except ET.ParseError as exc:
        line, column = exc.position
        raise DataFormatError(
            f"{path}: not well-formed XML at line {line}, column {column + 1}"
        ) from None
    records = []
    for element in root.iter("Problem"):
        record: dict[str, Any] = {"ID": element.get("ID")}
        for child in element:
            record[child.tag] = "".join(child.itertext())
        records.append(record)
    return records


def _asdiv_label(item: Any) -> str:
    return f" (ID {item['ID']})" if isinstance(item, dict) and item.get("ID") else ""


def load_asdiv(path: str | Path, *, strict: bool = True) -> LoadResult:
    """ASDiv XML: <Problem ID=..><Body/><Question/><Answer>9 (apples)</Answer><Formula/>."""
    p = _existing(path)
    records = _asdiv_records(p)
    if not records:
        raise DataFormatError(f"{p}: no <Problem> elements found (expected ASDiv XML)")
    rows = _element_rows(records, _asdiv_label)
    return _collect(rows, _parse_asdiv, where=str(p), dataset="asdiv", strict=strict)


# ------------------------------------------------------------------------- MultiArith


def _parse_multiarith(record: Any) -> tuple[str, float]:
    question = _question(_text_field(record, "sQuestion", "question"), "sQuestion")
    if isinstance(record, dict) and "lSolutions" not in record and "final_ans" in record:
        return question, _number_field(record, "final_ans")  # the hub copy's layout
    solutions = _get_field(record, ("lSolutions",))
    if not isinstance(solutions, list) or not solutions:
        raise _RowError(
            "lSolutions",
            "non_numeric_answer",
            f"expected a non-empty list of numbers, got {_short(solutions)}",
        )
    numbers = [_to_number(s) for s in solutions]
    if any(n is None for n in numbers):
        raise _RowError(
            "lSolutions",
            "non_numeric_answer",
            f"expected a list of numbers, got {_short(solutions)}",
        )
    if len(set(numbers)) > 1:  # one problem, one answer: several different ones is damage
        raise _RowError(
            "lSolutions",
            "ambiguous_answer",
            f"expected one solution, got {len(numbers)} different ones: {_short(solutions)}",
        )
    return question, numbers[0]


def load_multiarith(path: str | Path, *, strict: bool = True) -> LoadResult:
    """MultiArith JSON list of {sQuestion, lSolutions: [number], lEquations}."""
    p = _existing(path)
    rows = _element_rows(_json_list(p))
    return _collect(rows, _parse_multiarith, where=str(p), dataset="multiarith", strict=strict)


# ---------------------------------------------------------------------- generic JSONL


def _parse_plain(record: Any) -> tuple[str, float]:
    question = _question(_text_field(record, "question"))
    return question, _number_field(record, "answer")


def load_jsonl(
    path: str | Path, *, strict: bool = True, source_name: str | None = None
) -> LoadResult:
    """JSONL of {"question", "answer"} rows; the answer is a number or a numeric string.

    Other fields are ignored. `source_name` (default: the file's stem) becomes each
    problem's `source_dataset`.
    """
    p = _existing(path)
    name = source_name or p.stem
    return _collect(_jsonl_rows(p), _parse_plain, where=str(p), dataset=name, strict=strict)


# --------------------------------------------------------------------------- embedded

EMBEDDED_FILES = {"train": "embedded_train.jsonl", "test": "embedded_test.jsonl"}


def embedded_path(split: Literal["train", "test"]) -> Path:
    """The packaged file of the embedded problem set for `split`."""
    if split not in EMBEDDED_FILES:
        raise ValueError(f"embedded split must be 'train' or 'test', got {split!r}")
    return Path(str(resources.files("fdd_core") / "data" / EMBEDDED_FILES[split]))


def load_embedded(split: Literal["train", "test"] = "train") -> LoadResult:
    """The project's own small problem set (see fdd_core/embedded_problems.py)."""
    return load_jsonl(embedded_path(split), source_name="embedded")


# -------------------------------------------------------------------------------- hub

# name -> (hub repo, config, {our split: hub split}, row parser)
HUB_DATASETS: dict[str, tuple[str, str | None, dict[str, str], RowParser]] = {
    "gsm8k": ("openai/gsm8k", "main", {"train": "train", "test": "test"}, _parse_gsm8k),
    "svamp": ("ChilleD/SVAMP", None, {"train": "train", "test": "test"}, _parse_svamp),
    # The hub copy of ASDiv has one split, 'validation' (all 2,305 problems).
    "asdiv": ("EleutherAI/asdiv", "asdiv", {"test": "validation"}, _parse_asdiv),
    "multiarith": (
        "ChilleD/MultiArith",
        None,
        {"train": "train", "test": "test"},
        _parse_multiarith,
    ),
}


def _load_hub(name: str, split: str, *, strict: bool) -> LoadResult:
    repo, config, splits, parse = HUB_DATASETS[name]
    if split not in splits:
        raise DataFormatError(
            f"{name} on the hub ({repo}) has no '{split}' split; available: {sorted(splits)}"
        )
    hub_split = splits[split]
    label = f"{repo}" + (f" [{config}]" if config else "") + f" split '{hub_split}'"
    try:
        import datasets  # lazily: importing it costs seconds

        table = datasets.load_dataset(repo, config, split=hub_split)
    except Exception as exc:  # noqa: BLE001 - any failure here means: not reachable
        raise DataUnavailableError(
            f"could not load {name} ({label}) from the Hugging Face hub: "
            f"{type(exc).__name__}: {exc}. Loading from the hub needs a network connection "
            f"(and HF_HUB_OFFLINE unset). Give a local file instead: `path:` in data.train, "
            f"or evaluation.data_paths.{name} for benchmarks."
        ) from exc
    rows = ((f"row {i}", dict(record)) for i, record in enumerate(table))
    result = _collect(rows, parse, where=f"hub {label}", dataset=name, strict=strict)
    return result


# --------------------------------------------------------------------------- dispatch

# Loader name -> reader of a local file in that format (path, *, strict) -> LoadResult.
# 'jsonl' ({question, answer} rows) and 'embedded' (the packaged set) are handled in
# load_source. A loader is a file format: a benchmark spec or a data.train source names one.
_FILE_LOADERS: dict[str, Callable[..., LoadResult]] = {
    "gsm8k": load_gsm8k,
    "svamp": load_svamp,
    "asdiv": load_asdiv,
    "multiarith": load_multiarith,
}
LOADERS = _FILE_LOADERS  # the public name of the table


def loader_names() -> list[str]:
    """Every loader a data source or a benchmark spec may name."""
    return ["embedded", *_FILE_LOADERS, "jsonl"]


def register_loader(
    name: str,
    read: Callable[..., LoadResult],
    *,
    hub: tuple[str, str | None, dict[str, str], RowParser] | None = None,
) -> None:
    """Add a file format: `read(path, *, strict)` -> LoadResult, and optionally where the
    hub holds it (repo, config, {our split: hub split}, row parser)."""
    if name in ("embedded", "jsonl"):
        raise ValueError(f"loader {name!r} is built in")
    _FILE_LOADERS[name] = read
    if hub is not None:
        HUB_DATASETS[name] = hub


def _limited(result: LoadResult, limit: int | None) -> LoadResult:
    if limit is None or len(result.problems) <= limit:
        return result
    return LoadResult(result.problems[:limit], dict(result.skipped), result.source)


def load_source(source: DataSource, *, strict: bool = True) -> LoadResult:
    """Load one configured source: a local file, the embedded set, or the hub.

    With a `path`, the file is the split (`split` is not used). Without one, 'embedded'
    reads the packaged set and the public benchmarks come from the hub.
    """
    name, path = source.name, source.path
    if name == "jsonl":
        if not path:
            raise DataFormatError("a 'jsonl' source needs a path to a {question, answer} file")
        result = load_jsonl(path, strict=strict)
    elif name == "embedded":
        result = (
            load_jsonl(path, strict=strict, source_name="embedded")
            if path
            else load_embedded(source.split)
        )
    elif path:
        result = _FILE_LOADERS[name](path, strict=strict)
    else:
        result = _load_hub(name, source.split, strict=strict)
    return _limited(result, source.limit)


def load_benchmark(
    name: str,
    path: str | Path | None = None,
    *,
    split: Literal["train", "test"] | None = "test",
    limit: int | None = None,
    strict: bool = True,
) -> LoadResult:
    """A benchmark's problems by spec name (fdd_core/benchmarks/*.yaml and the benchmark
    search path), a .jsonl file or a .yaml spec file: the same path `fdd eval` takes
    (fdd_core.benchmarks.load_spec + load_problems), so what evaluation accepts,
    decontamination and preflight accept too. `split` None: the spec's own split."""
    from fdd_core.benchmarks import load_problems, load_spec

    return load_problems(load_spec(name), path, split=split, limit=limit, strict=strict)
