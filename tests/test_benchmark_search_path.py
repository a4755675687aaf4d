"""Adding a benchmark is one YAML file: evaluation, decontamination and preflight see it.

The spec goes in a temporary folder put on the documented search path
($FDD_BENCHMARK_PATH, or fdd_core.benchmarks.add_benchmark_dir); nothing else is edited.
The student here is a scripted test double; the sandbox that runs its programs is real.
"""

from __future__ import annotations

import pytest

from fdd_core.backends.base import BackendBase, Completion
from fdd_core.benchmarks import (
    SEARCH_PATH_ENV,
    add_benchmark_dir,
    list_specs,
    load_spec,
    remove_benchmark_dir,
)
from fdd_core.config import ConfigError, EvaluationConfig, SandboxConfig, load_config
from fdd_core.evaluation import benchmark_model
from fdd_core.io import write_jsonl
from fdd_core.preflight import check_data
from fdd_core.stages import benchmark_test_questions

ROWS = [
    {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?", "answer": 7},
    {"question": "A box holds 6 pens. How many pens are in 2 boxes?", "answer": 12},
]


@pytest.fixture
def tiny_dir(tmp_path):
    data = write_jsonl(tmp_path / "tiny-test.jsonl", ROWS)
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "tinyarith.yaml").write_text(
        "name: tinyarith\n"
        "description: two one-step problems (a test benchmark)\n"
        "loader: jsonl\n"
        f"path: {data}\n"
        "generation:\n  max_tokens: 40\n"
        "version: 1\n"
    )
    (folder / "broken.yaml").write_text(
        f"name: broken\nloader: jsonl\npath: {tmp_path / 'absent.jsonl'}\nversion: 1\n"
    )
    return folder


class SumStudent(BackendBase):
    """Writes `ans = <sum of the question's numbers>`: right on the first row only."""

    name = "scripted"
    model_id = "scripted-student"

    def generate(self, prompts, params):
        import re

        out = []
        for p in prompts:
            question = p.rsplit("Question:", 1)[-1]
            nums = [int(x) for x in re.findall(r"\d+", question)]
            out.append([Completion(text=f"ans = {sum(nums)}\n```")])
        return out


def test_env_search_path_spec_reaches_evaluation_decontamination_and_preflight(
    tiny_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv(SEARCH_PATH_ENV, str(tiny_dir))
    assert "tinyarith" in list_specs() and "gsm8k" in list_specs()
    assert load_spec("tinyarith").generation.max_tokens == 40

    results = benchmark_model(
        "scripted",
        ["tinyarith"],
        eval_cfg=EvaluationConfig(benchmarks=["tinyarith"]),
        sandbox_cfg=SandboxConfig(isolate_network=False),
        out_dir=tmp_path / "eval",
        backend=SumStudent(),
    )
    res = results["tinyarith"]
    assert (res.n, res.correct) == (2, 1)  # 3 + 4 = 7 right; 6 + 2 = 8 is not 12

    questions = benchmark_test_questions(EvaluationConfig(benchmarks=["tinyarith"]))
    assert questions == {"tinyarith": [r["question"] for r in ROWS]}

    check_data(load_config(None, ["evaluation.benchmarks=[tinyarith]"]))  # passes quietly
    with pytest.raises(ConfigError, match="cannot load 'broken'"):
        check_data(load_config(None, ["evaluation.benchmarks=[broken]"]))


def test_added_folder_is_searched_and_can_be_removed(tiny_dir, monkeypatch):
    monkeypatch.delenv(SEARCH_PATH_ENV, raising=False)
    assert "tinyarith" not in list_specs()
    add_benchmark_dir(tiny_dir)
    try:
        assert load_spec("tinyarith").name == "tinyarith"
    finally:
        remove_benchmark_dir(tiny_dir)
    with pytest.raises(ValueError, match="unknown benchmark 'tinyarith'.*FDD_BENCHMARK_PATH"):
        load_spec("tinyarith")


def test_spec_naming_an_unknown_loader_is_refused(tmp_path, monkeypatch):
    (tmp_path / "odd.yaml").write_text("name: odd\nloader: parquet\nversion: 1\n")
    monkeypatch.setenv(SEARCH_PATH_ENV, str(tmp_path))
    with pytest.raises(ValueError, match="unknown loader 'parquet'; known: embedded, gsm8k"):
        load_spec("odd")
