"""Prompt templates: files load and validate, rendering checks its inputs, versions are
pinned to the text, the few-shot programs are right, and the student format is stable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fdd_core.parsing import extract_problems, extract_program
from fdd_core.prompts import (
    STUDENT_PROMPT_VERSION,
    TEMPLATE_NAMES,
    PromptError,
    PromptTemplate,
    complex_messages,
    load_template,
    parse_template,
    program_messages,
    similar_messages,
    student_prompt,
)
from tests.conftest import REPO

PROMPT_DIR = REPO / "fdd_core" / "prompts"

# Each template's version is pinned to a hash of its text. When this test fails you
# changed what the teacher sees: bump `version` in the YAML file (rows record it and the
# request cache keys on it), then update the hash here.
PINNED = {
    "program": ("pot-fewshot-v1", "dc026bf00b3133c1"),
    "complex": ("complex-v1", "181ed46bb90a748f"),
    "similar": ("similar-v1", "9ae8c13304b0ccf7"),
}


def test_every_builtin_template_loads_with_declared_inputs():
    assert set(TEMPLATE_NAMES) == {"program", "complex", "similar"}
    for name in TEMPLATE_NAMES:
        template = load_template(name)
        assert template.name == name
        used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", template.text + (template.system or "")))
        assert used == set(template.inputs)
    assert load_template("program").inputs == ("question",)
    assert set(load_template("complex").inputs) == {"question", "n"}
    assert set(load_template("similar").inputs) == {"question", "n"}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_template_versions_are_pinned_to_their_text(name):
    template = load_template(name)
    version, fingerprint = PINNED[name]
    assert (template.version, template.fingerprint) == (version, fingerprint), (
        f"prompt '{name}' changed: bump its version in fdd_core/prompts/{name}.yaml and "
        f"update PINNED here to ({template.version!r}, {template.fingerprint!r})"
    )


def test_versions_are_unique():
    versions = [load_template(n).version for n in TEMPLATE_NAMES] + [STUDENT_PROMPT_VERSION]
    assert len(set(versions)) == len(versions)


def test_template_files_are_package_data():
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert '"prompts/*.yaml"' in pyproject
    assert sorted(p.stem for p in PROMPT_DIR.glob("*.yaml")) == sorted(TEMPLATE_NAMES)


# ------------------------------------------------------------------------- rendering


def test_render_fills_placeholders_once():
    template = load_template("complex")
    tricky = "Sam has {{n}} apples and {x} pears. How many {{question}}?"
    text = template.render(question=tricky, n=3)
    assert tricky in text  # placeholder-like text inside a value is left alone
    assert "Write 3 new math word problems" in text
    assert "{{" not in text.replace(tricky, "")


def test_render_rejects_missing_and_undeclared_inputs():
    template = load_template("similar")
    with pytest.raises(PromptError, match=r"missing: \['n'\]"):
        template.render(question="How many?")
    with pytest.raises(PromptError, match=r"not declared: \['temperature'\]"):
        template.render(question="How many?", n=2, temperature=0.7)
    with pytest.raises(PromptError, match="None"):
        template.render(question=None, n=2)


def test_constructing_a_template_checks_placeholders_against_inputs():
    with pytest.raises(PromptError, match=r"undeclared: \['n'\]"):
        PromptTemplate("t", "t-v1", ("question",), None, "Q: {{question}} n={{n}}")
    with pytest.raises(PromptError, match=r"missing from text: \['n'\]"):
        PromptTemplate("t", "t-v1", ("question", "n"), None, "Q: {{question}}")
    with pytest.raises(PromptError, match="malformed placeholder"):
        PromptTemplate("t", "t-v1", ("question",), None, "Q: {{question}} {{ 2bad }}")
    # Placeholders in the system message count too.
    ok = PromptTemplate("t", "t-v1", ("question", "role"), "You are {{role}}.", "{{question}}")
    assert ok.messages(question="Q?", role="a tutor")[0]["content"] == "You are a tutor."


def _write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_template_files_are_validated_with_errors_naming_the_field(tmp_path):
    good = "name: mine\nversion: mine-v1\ninputs: [question]\ntext: |-\n  Solve {{question}}\n"
    template = load_template(_write(tmp_path / "mine.yaml", good))
    assert (template.name, template.version, template.inputs) == ("mine", "mine-v1", ("question",))
    assert template.render(question="2+2?") == "Solve 2+2?"
    cases = {
        "undeclared.yaml": (good.replace("[question]", "[]"), "undeclared"),
        "noversion.yaml": (good.replace("version: mine-v1\n", ""), "field 'version' is missing"),
        "extra.yaml": (good + "temperature: 0.7\n", "unknown fields"),
        "inputs.yaml": (good.replace("[question]", "question"), "field 'inputs'"),
        "notyaml.yaml": ("name: [unclosed\n", "not valid YAML"),
        "list.yaml": ("- a\n- b\n", "expected a mapping"),
    }
    for name, (text, expected) in cases.items():
        with pytest.raises(PromptError) as info:
            load_template(_write(tmp_path / name, text))
        assert name in str(info.value) and expected in str(info.value), str(info.value)
    with pytest.raises(PromptError, match="unknown prompt template 'nope'"):
        load_template("nope")


def test_parse_template_checks_types():
    with pytest.raises(PromptError, match="field 'text' must be a non-empty string"):
        parse_template({"name": "a", "version": "v", "inputs": [], "text": ""}, "<mem>")


# -------------------------------------------------------------------------- messages


def test_program_messages_are_few_shot_pot():
    messages = program_messages("  Ana has 3 pens and buys 4 more. How many pens now?  ")
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert user.rstrip().endswith("Question: Ana has 3 pens and buys 4 more. How many pens now?")
    assert 3 <= user.count("```python") <= 4
    assert "`ans`" in user and "input()" in user


def test_few_shot_programs_compile_and_compute_their_answers():
    # The worked examples are what the teacher imitates: each must be a right program.
    text = load_template("program").text
    blocks = re.findall(r"Question: (.*?)\n```python\n(.*?)```", text, re.S)
    assert 3 <= len(blocks) <= 4
    expected = {"Lena": 23, "baker": 22, "jacket": 68, "Tim walks": 12}
    for question, code in blocks:
        assert "input(" not in code and "print(" not in code
        assert code.strip().splitlines()[-1].startswith("ans = ")
        parsed = extract_program(f"```python\n{code}```")
        assert parsed.program is not None, question
        scope: dict = {}
        exec(compile(parsed.program, "<few-shot>", "exec"), {}, scope)  # our own text
        key = next(k for k in expected if k in question)
        assert scope["ans"] == pytest.approx(expected[key]), question


def test_synthesis_messages_ask_for_n_numbered_problems():
    question = "Tom has 5 apples and eats 2. How many apples are left?"
    for build, word in ((complex_messages, "harder"), (similar_messages, "similar")):
        messages = build(question, 4)
        user = messages[-1]["content"]
        assert question in user and "Write 4 new" in user and word in user
        assert "numbered list" in user and "1." in user
        with pytest.raises(PromptError, match="n must be an integer >= 1"):
            build(question, 0)
        with pytest.raises(PromptError):
            build(question, True)
    # The format the prompt shows is one the parser reads back.
    reply = "1. Tom has 5 apples and buys 3 bags of 4. How many now?\n2. Ann has 8 pears."
    expected = ["Tom has 5 apples and buys 3 bags of 4. How many now?"]
    assert extract_problems(reply).problems == expected


def test_student_prompt_format_is_stable():
    assert STUDENT_PROMPT_VERSION == "student-v1"
    assert student_prompt("  What is 2 + 3?\n") == (
        "Question: What is 2 + 3?\n# Python program that stores the final answer in `ans`:\n"
    )
    # A student's raw continuation is read by the program parser.
    completion = "a = 2\nb = 3\nans = a + b\nQuestion: What is 4 + 4?\n"
    assert extract_program(completion).program == "a = 2\nb = 3\nans = a + b"
