"""Data loaders: the real GSM8K/SVAMP files, small ASDiv/MultiArith files, the embedded set,
malformed rows in each format, strict and lenient modes, and the dispatchers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from fdd_core.config import DataSource
from fdd_core.data import (
    DataFileNotFoundError,
    DataFormatError,
    DataUnavailableError,
    _to_number,
    embedded_path,
    load_asdiv,
    load_benchmark,
    load_embedded,
    load_gsm8k,
    load_jsonl,
    load_multiarith,
    load_source,
    load_svamp,
)
from fdd_core.embedded_problems import FILES, check, generate, render
from fdd_core.schemas import normalize_text, problem_id
from tests.conftest import REPO, shared_file

# ------------------------------------------------------------------------- helpers


def write_jsonl(path: Path, rows: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


ASDIV_XML = """<?xml version="1.0" encoding="utf-8"?>
<Machine-Reading-Corpus-File>
  <ProblemSet>
    <Problem ID="nluds-0001" Grade="1" Source="http://example.org">
      <Body>Seven red apples and two green apples are in the basket.</Body>
      <Question>How many apples are in the basket?</Question>
      <Solution-Type>Addition</Solution-Type>
      <Answer>9 (apples)</Answer>
      <Formula>7+2=9</Formula>
    </Problem>
    <Problem ID="nluds-0002" Grade="2" Source="http://example.org">
      <Body>Ellen has six more balls than Marin. Marin has nine balls.</Body>
      <Question>How many balls does Ellen have?</Question>
      <Solution-Type>Addition</Solution-Type>
      <Answer>15 (balls)</Answer>
      <Formula>6+9=15</Formula>
    </Problem>
    <Problem ID="nluds-0003" Grade="4" Source="http://example.org">
      <Body>A class has 12 boys and 18 girls.</Body>
      <Question>What is the ratio of boys to girls?</Question>
      <Solution-Type>Ratio</Solution-Type>
      <Answer>2:3</Answer>
      <Formula>12/18=2/3</Formula>
    </Problem>
    <Problem ID="nluds-0004" Grade="3" Source="http://example.org">
      <Body>Tom cut a pie into 4 equal pieces and ate 1.</Body>
      <Question>What fraction of the pie did he eat?</Question>
      <Solution-Type>Fraction</Solution-Type>
      <Answer>1/4 (pie)</Answer>
      <Formula>1/4=1/4</Formula>
    </Problem>
    <Problem ID="nluds-0005" Grade="2" Source="http://example.org">
      <Body>Sam has 3 dogs and Ann has 3 dogs.</Body>
      <Question>Do they have the same number of dogs?</Question>
      <Solution-Type>Comparison</Solution-Type>
      <Answer>yes</Answer>
      <Formula>3=3</Formula>
    </Problem>
    <Problem ID="nluds-0006" Grade="5" Source="http://example.org">
      <Body>A tank holds 1,250 liters and loses 12.5 liters an hour.</Body>
      <Question>How many hours until it is empty?</Question>
      <Solution-Type>Division</Solution-Type>
      <Answer>100 (hours)</Answer>
      <Formula>1250/12.5=100</Formula>
    </Problem>
  </ProblemSet>
</Machine-Reading-Corpus-File>
"""

MULTIARITH = [
    {
        "iIndex": 1,
        "sQuestion": " For Halloween Debby and her sister combined the candy they "
        "received. Debby had 32 pieces of candy while her sister had 42. If they ate 35 pieces "
        "the first night, how many pieces do they have left?",
        "lAlignments": [],
        "lEquations": ["X=((32.0+42.0)-35.0)"],
        "lSolutions": [39.0],
    },
    {
        "iIndex": 2,
        "sQuestion": "A pet store had 13 siamese cats and 5 house cats. During a "
        "sale they sold 10 cats. How many cats do they have left?",
        "lAlignments": [],
        "lEquations": ["X=((13.0+5.0)-10.0)"],
        "lSolutions": [8.0],
    },
    {
        "iIndex": 3,
        "sQuestion": "Each box holds 2.5 kilograms of flour. How many kilograms are in 3 boxes?",
        "lAlignments": [],
        "lEquations": ["X=(2.5*3.0)"],
        "lSolutions": [7.5],
    },
]


# ----------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "value, expected",
    [
        (5, 5.0),
        (2.5, 2.5),
        ("12", 12.0),
        (" -3.5 ", -3.5),
        ("1,234", 1234.0),
        ("1,450,000", 1450000.0),
        ("$18", 18.0),
        ("3/4", 0.75),
        (".5", 0.5),
    ],
)
def test_to_number_accepts_single_numbers(value, expected):
    assert _to_number(value) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value",
    [
        True,
        None,
        "",
        "2:3",
        "yes",
        "12,34",
        "5 or 6",
        "1/0",
        "nan",
        "inf",
        float("nan"),
        float("inf"),
        [3],
        "1,2345",
    ],
)
def test_to_number_rejects_everything_else(value):
    assert _to_number(value) is None


# ------------------------------------------------------------------ GSM8K (real files)


@pytest.mark.parametrize("split, count", [("train", 7473), ("test", 1319)])
def test_gsm8k_real_files_load_completely(split, count):
    path = shared_file("gsm8k", f"{split}.jsonl")
    result = load_gsm8k(path)
    assert len(result.problems) == count
    assert result.skipped == {}
    assert all(isinstance(p.answer, float) and math.isfinite(p.answer) for p in result.problems)
    assert all(p.source_dataset == "gsm8k" and p.question for p in result.problems)
    # The reference is the number after '####' (thousands separators removed), checked
    # against an independent reading of the raw rows.
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for row, problem in zip(raw, result.problems, strict=True):
        final = row["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        assert problem.answer == float(final)
        assert problem.question == row["question"].strip()


def test_gsm8k_first_rows_are_as_in_the_file():
    result = load_gsm8k(shared_file("gsm8k", "train.jsonl"))
    first = result.problems[0]
    assert first.question.startswith("Natalia sold clips to 48 of her friends")
    assert first.answer == 72.0
    # Answers with thousands separators ("#### 1,600") come out as plain numbers.
    assert any(p.answer >= 1000 for p in result.problems)


def test_gsm8k_ids_are_stable_content_hashes():
    path = shared_file("gsm8k", "test.jsonl")
    first, second = load_gsm8k(path), load_gsm8k(path)
    assert [p.id for p in first.problems] == [p.id for p in second.problems]
    assert all(p.id == problem_id(p.question) for p in first.problems[:50])


def test_gsm8k_malformed_rows_name_file_line_and_field(tmp_path):
    good = {
        "question": "Tom has 3 apples and buys 2 more. How many now?",
        "answer": "3+2=<<3+2=5>>5\n#### 5",
    }
    cases = {
        "bad_json.jsonl": ([good, "{not json"], "line 2", "not valid JSON"),
        "no_question.jsonl": ([good, good, {"answer": "#### 4"}], "line 3", "'question'"),
        "no_marker.jsonl": (
            [{"question": "How many?", "answer": "It is 5."}],
            "line 1",
            "'#### <number>'",
        ),
        "word_answer.jsonl": (
            [good, {"question": "How many?", "answer": "#### five"}],
            "line 2",
            "field 'answer'",
        ),
        "empty_q.jsonl": (
            [good, {"question": "   ", "answer": "#### 5"}],
            "line 2",
            "field 'question'",
        ),
    }
    for name, (rows, where, what) in cases.items():
        path = write_jsonl(tmp_path / name, rows)
        with pytest.raises(DataFormatError) as info:
            load_gsm8k(path)
        message = str(info.value)
        assert name in message and where in message and what in message, message


def test_gsm8k_lenient_mode_skips_and_counts_by_reason(tmp_path):
    good = {"question": "Tom has 3 apples and buys 2 more. How many now?", "answer": "#### 5"}
    rows = [
        good,
        "{oops",
        {"answer": "#### 3"},
        {"question": "Q?", "answer": "#### x"},
        {"question": "Sam has 1,000 stamps. How many?", "answer": "#### 1,000"},
        "",
    ]
    result = load_gsm8k(write_jsonl(tmp_path / "mixed.jsonl", rows), strict=False)
    assert [p.answer for p in result.problems] == [5.0, 1000.0]
    assert result.skipped == {"invalid_json": 1, "missing_field": 1, "non_numeric_answer": 1}
    assert result.n_skipped == 3


def test_empty_or_useless_files_are_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataFormatError, match="empty.jsonl.*no problems"):
        load_gsm8k(empty)
    only_bad = write_jsonl(tmp_path / "bad.jsonl", ["{x", "{y"])
    with pytest.raises(DataFormatError, match="no problems.*invalid_json"):
        load_jsonl(only_bad, strict=False)
    empty_json = tmp_path / "empty.json"
    empty_json.write_text("[]", encoding="utf-8")
    with pytest.raises(DataFormatError, match="no problems"):
        load_svamp(empty_json)


def test_missing_file_is_a_file_not_found_error_naming_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "train.jsonl"
    for loader in (load_gsm8k, load_svamp, load_asdiv, load_multiarith, load_jsonl):
        with pytest.raises(FileNotFoundError) as info:
            loader(missing)
        assert isinstance(info.value, DataFileNotFoundError)
        assert str(missing) in str(info.value)


# ------------------------------------------------------------------ SVAMP (real file)


def test_svamp_real_file_loads_all_1000():
    path = shared_file("svamp", "SVAMP.json")
    result = load_svamp(path)
    assert len(result.problems) == 1000 and result.skipped == {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    for row, problem in zip(raw, result.problems, strict=True):
        assert problem.question == f"{row['Body'].strip()} {row['Question'].strip()}"
        assert problem.answer == float(row["Answer"])
        assert problem.source_dataset == "svamp"
    assert [p.id for p in load_svamp(path).problems] == [p.id for p in result.problems]


def test_svamp_malformed_elements_name_index_id_and_field(tmp_path):
    good = {
        "ID": "chal-1",
        "Body": "Each pack costs 76 dollars.",
        "Question": "How much for 2?",
        "Equation": "76*2",
        "Answer": 152.0,
        "Type": "Multiplication",
    }
    bad_answer = dict(good, ID="chal-2", Answer="lots")
    no_body = {k: v for k, v in good.items() if k != "Body"} | {"ID": "chal-3"}
    path = tmp_path / "svamp.json"
    path.write_text(json.dumps([good, bad_answer, no_body, "junk"]), encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        load_svamp(path)
    message = str(info.value)
    assert "svamp.json" in message and "element 1" in message and "chal-2" in message
    assert "field 'Answer'" in message and "expected a number" in message
    result = load_svamp(path, strict=False)
    assert len(result.problems) == 1
    assert result.skipped == {"non_numeric_answer": 1, "missing_field": 1, "not_an_object": 1}


def test_svamp_file_that_is_not_a_list_or_not_json(tmp_path):
    not_list = tmp_path / "obj.json"
    not_list.write_text('{"ID": 1}', encoding="utf-8")
    with pytest.raises(DataFormatError, match="obj.json.*JSON list"):
        load_svamp(not_list)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"ID": 1},\n  {oops}]', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"broken.json.*line 2"):
        load_svamp(broken)


# ------------------------------------------------------------------------------ ASDiv


def test_asdiv_numeric_answers_and_skipped_non_numeric(tmp_path):
    path = tmp_path / "ASDiv.xml"
    path.write_text(ASDIV_XML, encoding="utf-8")
    for strict in (True, False):  # non-numeric answers are skipped in strict mode too
        result = load_asdiv(path, strict=strict)
        assert [p.answer for p in result.problems] == [9.0, 15.0, 0.25, 100.0]
        assert result.skipped == {"non_numeric_answer": 2}
    first = result.problems[0]
    assert first.question == (
        "Seven red apples and two green apples are in the basket. "
        "How many apples are in the basket?"
    )
    assert first.source_dataset == "asdiv"


def test_asdiv_malformed_problem_names_index_id_and_field(tmp_path):
    broken = ASDIV_XML.replace("<Question>How many balls does Ellen have?</Question>", "")
    path = tmp_path / "asdiv_missing.xml"
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        load_asdiv(path)
    message = str(info.value)
    assert "asdiv_missing.xml" in message and "element 1" in message
    assert "nluds-0002" in message and "field 'Question'" in message
    lenient = load_asdiv(path, strict=False)
    assert lenient.skipped == {"missing_field": 1, "non_numeric_answer": 2}
    assert len(lenient.problems) == 3


def test_asdiv_not_xml_and_no_problems(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<ProblemSet><Problem ID='1'><Body>x</Body>\n</ProblemSet>", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad.xml: not well-formed XML at line 2"):
        load_asdiv(bad)
    none = tmp_path / "none.xml"
    none.write_text("<ProblemSet></ProblemSet>", encoding="utf-8")
    with pytest.raises(DataFormatError, match="no <Problem> elements"):
        load_asdiv(none)


# ------------------------------------------------------------------------- MultiArith


def test_multiarith_loads_first_solution(tmp_path):
    path = tmp_path / "MultiArith.json"
    path.write_text(json.dumps(MULTIARITH), encoding="utf-8")
    result = load_multiarith(path)
    assert [p.answer for p in result.problems] == [39.0, 8.0, 7.5]
    assert result.problems[0].question.startswith("For Halloween Debby")  # stripped
    assert {p.source_dataset for p in result.problems} == {"multiarith"}


def test_multiarith_malformed_elements(tmp_path):
    rows = [
        MULTIARITH[0],
        dict(MULTIARITH[1], lSolutions=[]),
        dict(MULTIARITH[2], lSolutions=["seven"]),
        {"sQuestion": "How many?", "lSolutions": [1.0, 2.0]},
        {"lSolutions": [3.0]},
    ]
    path = tmp_path / "ma.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        load_multiarith(path)
    message = str(info.value)
    assert "ma.json" in message and "element 1" in message and "field 'lSolutions'" in message
    result = load_multiarith(path, strict=False)
    assert len(result.problems) == 1
    assert result.skipped == {"non_numeric_answer": 2, "ambiguous_answer": 1, "missing_field": 1}


# --------------------------------------------------------------------- generic JSONL


def test_generic_jsonl_numbers_and_numeric_strings(tmp_path):
    rows = [
        {"question": "What is 2 + 3?", "answer": 5, "extra": "ignored"},
        {"question": "What is 10 / 4?", "answer": "2.5"},
        {"question": "What is 1000 + 234?", "answer": "1,234"},
    ]
    path = write_jsonl(tmp_path / "mine.jsonl", rows)
    result = load_jsonl(path)
    assert [p.answer for p in result.problems] == [5.0, 2.5, 1234.0]
    assert {p.source_dataset for p in result.problems} == {"mine"}
    assert load_jsonl(path, source_name="custom").problems[0].source_dataset == "custom"
    bad = write_jsonl(tmp_path / "bad.jsonl", rows + [{"question": "Q?", "answer": "#### 5"}])
    with pytest.raises(DataFormatError, match=r"bad.jsonl: line 4: field 'answer'"):
        load_jsonl(bad)


def test_order_is_file_order_and_duplicates_are_kept(tmp_path):
    rows = [{"question": f"What is {i} + 1?", "answer": i + 1} for i in (3, 1, 2)]
    rows.append(rows[0])
    result = load_jsonl(write_jsonl(tmp_path / "d.jsonl", rows))
    assert [p.answer for p in result.problems] == [4.0, 2.0, 3.0, 4.0]
    assert result.problems[0].id == result.problems[3].id


# ------------------------------------------------------------------------- embedded


def test_embedded_set_sizes_and_disjoint_splits():
    train, test = load_embedded("train"), load_embedded("test")
    assert len(train.problems) >= 150 and len(test.problems) >= 60
    train_q = {normalize_text(p.question) for p in train.problems}
    test_q = {normalize_text(p.question) for p in test.problems}
    assert len(train_q) == len(train.problems) and len(test_q) == len(test.problems)
    assert not train_q & test_q
    assert all(p.answer is not None and p.answer > 0 for p in train.problems + test.problems)
    assert {p.source_dataset for p in train.problems} == {"embedded"}


def test_embedded_rows_match_generator_and_answers_are_right():
    generated = generate()
    for split in ("train", "test"):
        rows = [
            json.loads(line)
            for line in embedded_path(split).read_text(encoding="utf-8").splitlines()
        ]
        assert [r["question"] for r in rows] == [g.question for g in generated[split]]
        steps = [r["steps"] for r in rows]
        assert set(steps) == {1, 2, 3}
        assert steps.count(1) / len(steps) >= 0.4  # a good share of one-step problems
        # Mostly whole-number answers.
        assert sum(float(r["answer"]).is_integer() for r in rows) / len(rows) >= 0.9


def test_embedded_answers_recomputed_from_the_question_numbers():
    # Independent check of a few one-step templates: recompute the answer from the numbers
    # in the question text.
    import re

    checked = 0
    for g in generate()["train"]:
        nums = [int(n) for n in re.findall(r"\d+", g.question)]
        if g.template in ("add_gain", "more_than"):
            assert g.answer == nums[0] + nums[1], g.question
        elif g.template == "subtract_give":
            assert g.answer == nums[0] - nums[1], g.question
        elif g.template in ("equal_groups", "rate_distance", "pages_per_day", "price_total"):
            assert g.answer == nums[0] * nums[1], g.question
        elif g.template == "share_equally":
            assert g.answer * nums[1] == nums[0], g.question
        else:
            continue
        checked += 1
    assert checked >= 50


def test_embedded_generator_is_deterministic_and_check_detects_drift(tmp_path):
    first, second = generate(), generate()
    assert [p.question for p in first["train"]] == [p.question for p in second["train"]]
    assert check() == []  # the committed files are the generator's output
    for split, rows in first.items():
        (tmp_path / FILES[split]).write_text(render(rows), encoding="utf-8")
    assert check(tmp_path) == []
    edited = tmp_path / FILES["test"]
    edited.write_text(edited.read_text(encoding="utf-8").replace("apples", "pears", 1))
    assert any("differs" in d for d in check(tmp_path))
    (tmp_path / FILES["train"]).unlink()
    assert any("missing" in d for d in check(tmp_path))


def test_embedded_check_command_line():
    ok = subprocess.run(
        [sys.executable, "-m", "fdd_core.embedded_problems", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "match" in ok.stdout


def test_embedded_check_command_line_fails_on_a_changed_file(tmp_path):
    for split, rows in generate().items():
        (tmp_path / FILES[split]).write_text(render(rows)[:-200], encoding="utf-8")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "fdd_core.embedded_problems",
            "--check",
            "--data-dir",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert "differs" in run.stderr and "--write" in run.stderr


def test_embedded_data_has_license_and_readme():
    data = REPO / "fdd_core" / "data"
    assert "Apache License" in (data / "LICENSE").read_text(encoding="utf-8")
    assert "embedded_problems" in (data / "README.md").read_text(encoding="utf-8")


# -------------------------------------------------------------------------- dispatch


def test_load_source_embedded_local_files_and_limit(tmp_path):
    embedded = load_source(DataSource(name="embedded", split="test", limit=7))
    assert len(embedded.problems) == 7
    assert embedded.problems == load_embedded("test").problems[:7]
    path = write_jsonl(
        tmp_path / "x.jsonl",
        [{"question": f"What is {i} times 2?", "answer": 2 * i} for i in range(5)],
    )
    jsonl = load_source(DataSource(name="jsonl", path=str(path), limit=2))
    assert [p.answer for p in jsonl.problems] == [0.0, 2.0]
    asdiv = tmp_path / "a.xml"
    asdiv.write_text(ASDIV_XML, encoding="utf-8")
    assert len(load_source(DataSource(name="asdiv", path=str(asdiv))).problems) == 4


def test_load_source_passes_strict_through(tmp_path):
    path = write_jsonl(
        tmp_path / "m.jsonl",
        [{"question": "What is 1 + 1?", "answer": 2}, {"question": "What?", "answer": "two"}],
    )
    with pytest.raises(DataFormatError):
        load_source(DataSource(name="jsonl", path=str(path)))
    result = load_source(DataSource(name="jsonl", path=str(path)), strict=False)
    assert result.skipped == {"non_numeric_answer": 1}


def test_load_benchmark_by_name_path_and_unknown(tmp_path):
    gsm = shared_file("gsm8k", "test.jsonl")
    result = load_benchmark("gsm8k", gsm, limit=10)
    assert len(result.problems) == 10 and result.problems[0].source_dataset == "gsm8k"
    assert len(load_benchmark("embedded").problems) == len(load_embedded("test").problems)
    path = write_jsonl(tmp_path / "bench.jsonl", [{"question": "What is 6 / 3?", "answer": 2}])
    assert load_benchmark(str(path)).problems[0].answer == 2.0
    with pytest.raises(DataFormatError, match="unknown benchmark 'mystery'"):
        load_benchmark("mystery")
    with pytest.raises(FileNotFoundError):
        load_benchmark(str(tmp_path / "absent.jsonl"))


@pytest.mark.slow  # importing `datasets` takes seconds on a busy 2-core machine
def test_hub_without_network_says_so_and_suggests_a_local_path(tmp_path, monkeypatch):
    # A real call into `datasets` with the hub switched off and an empty cache: the same
    # failure a user without a network sees.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    with pytest.raises(DataUnavailableError) as info:
        load_benchmark("svamp")
    message = str(info.value)
    assert "ChilleD/SVAMP" in message and "network" in message
    assert "evaluation.data_paths.svamp" in message


def test_hub_asdiv_has_no_train_split():
    with pytest.raises(DataFormatError, match="no 'train' split"):
        load_source(DataSource(name="asdiv", split="train"))
