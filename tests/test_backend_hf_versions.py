"""The hf backend's supported transformers range, and no deprecation warning from our calls.

The range check is tested on version strings and, in a subprocess, on the import itself.
The warning test runs a real generate (causal and encoder-decoder tiny models), a real
LoRA training step with gradient checkpointing and then serves that adapter, with the
deprecation messages transformers prints for the old APIs turned into errors.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from fdd_core.backends.hf.versions import SUPPORTED, check_transformers

REPO = Path(__file__).resolve().parent.parent

torch = pytest.importorskip("torch")
tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def test_range_accepts_the_tested_versions_and_names_the_range_otherwise():
    check_transformers("5.24.0")
    check_transformers("5.39.2")
    check_transformers()  # the installed one
    for bad in ("4.57.1", "5.23.9", "6.0.0"):
        with pytest.raises(
            ImportError, match=rf"supports transformers >=5.24,<6.*{bad} is installed"
        ):
            check_transformers(bad)


def test_pyproject_states_the_same_range():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    pins = [d for deps in extras.values() for d in deps if d.startswith("transformers")]
    assert pins and all(p == "transformers" + ",".join(SUPPORTED) for p in pins), pins


def test_import_outside_the_range_fails_with_a_clear_message():
    code = (
        "import importlib.metadata as m\n"
        "real = m.version\n"
        "m.version = lambda name: '4.57.0' if name == 'transformers' else real(name)\n"
        "import fdd_core.backends.hf\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert proc.returncode != 0
    assert "ImportError: the 'hf' backend supports transformers >=5.24,<6" in proc.stderr
    assert "transformers 4.57.0 is installed" in proc.stderr


DEPRECATED = (
    r".*`past_key_values` is deprecated",
    r".*`is_gradient_checkpointing` is deprecated",
    r".*`gradient_checkpointing_enable` is deprecated",
)


def _strict():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    for message in DEPRECATED:
        warnings.filterwarnings("error", message=message)
    return ctx


def test_generate_and_a_training_step_print_no_deprecation(
    tiny_causal_dir, tiny_seq2seq_dir, tmp_path, caplog
):
    from fdd_core.backends.base import SamplingParams
    from fdd_core.backends.hf import HFBackend
    from fdd_core.config import TrainingConfig
    from fdd_core.prompts import student_prompt
    from fdd_core.schemas import Example, Problem, Rationale
    from fdd_core.training import train_student

    caplog.set_level(logging.WARNING)
    ctx = _strict()
    try:
        for folder in (tiny_causal_dir, tiny_seq2seq_dir):
            backend = HFBackend(str(folder), device="cpu", batch_size=4, progress=False)
            prompts = [student_prompt("Tom has 3 apples and buys 4. How many?")] * 2
            out = backend.generate(
                prompts, SamplingParams(n=2, temperature=1.0, seed=1, max_tokens=4)
            )
            assert len(out) == 2 and all(len(row) == 2 for row in out)
            backend.close()
        examples = []
        for i in range(4):
            p = Problem.create(f"What is {i} + 2?", float(i + 2))
            r = Rationale(
                problem_id=p.id,
                program=f"ans = {i} + 2",
                answer=float(i + 2),
                teacher="test",
                prompt_version="test",
            )
            examples.append(Example.join(p, r))
        cfg = TrainingConfig(
            method="lora", lora_r=4, max_steps=1, batch_size=4, gradient_checkpointing="on"
        )
        ref = train_student(examples, str(tiny_causal_dir), cfg, tmp_path / "m", device="cpu")
        assert ref.adapter
        lora = HFBackend(str(tiny_causal_dir), adapter=ref.path, device="cpu", progress=False)
        assert len(lora.generate(["x = 1"], SamplingParams(max_tokens=2))) == 1
        lora.close()
    finally:
        ctx.__exit__(None, None, None)
    logged = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert logged == []  # transformers also logs (not warns) when outputs are read the old way
