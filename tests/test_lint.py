"""The tree passes ruff's lint rules and is ruff-formatted (rules in pyproject.toml).

`make format` fixes what can be fixed automatically; `make lint` runs the same checks.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _ruff() -> str:
    beside = Path(sys.executable).with_name("ruff")
    found = str(beside) if beside.exists() else shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed (it comes with the dev extra: pip install -e '.[dev]')")
    return found


@pytest.mark.parametrize(
    "args", [["check", "--output-format", "concise", "."], ["format", "--check", "."]]
)
def test_ruff(args):
    proc = subprocess.run(
        [_ruff(), *args], cwd=REPO, capture_output=True, text=True, check=False, timeout=120
    )
    assert proc.returncode == 0, (
        f"ruff {' '.join(args)} found problems (run `make format`):\n{proc.stdout}{proc.stderr}"
    )
