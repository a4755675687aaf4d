"""Installs are reproducible: every package `make` installs is pinned.

A fresh machine must get what CI tested. An unpinned dependency resolves to whatever was
released last (the llama.cpp environment once picked up a new FastAPI and Starlette
between two runs), so:

- every `pip install` in the Makefile names a constraints file;
- constraints/cpu-lock.txt pins every distribution in the dependency closure of
  `fdd[train,dask,dev]`, and, in an environment `make` built with those constraints, at
  the version that is installed (a stale lock fails here, not on the next machine);
- constraints/llama.txt pins llama-cpp-python and every package of its server extra.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
EXTRAS = ("train", "dask", "dev")


def read_pins(path: Path) -> dict[str, str]:
    """{canonical name: version} of the `name==version` lines of a constraints file."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-c ") or "==" not in line:
            continue
        name, _, version = line.partition("==")
        if not name.strip() or not version.strip():
            raise AssertionError(f"{path}:{number}: expected name==version, got {raw!r}")
        pins[canonicalize_name(name.strip())] = version.strip()
    return pins


def closure(root: str, extras: tuple[str, ...]) -> set[str]:
    """Canonical names of the installed distributions `root[extras]` needs, recursively."""
    env = default_environment()
    seen: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        for text in metadata.requires(name) or []:
            req = Requirement(text)
            if req.marker is not None:
                active = [e for e in wanted if req.marker.evaluate({**env, "extra": e})]
                if not active and not req.marker.evaluate({**env, "extra": ""}):
                    continue
            dep = canonicalize_name(req.name)
            try:
                metadata.distribution(dep)
            except metadata.PackageNotFoundError:
                continue  # optional on this platform or not installed (checked below)
            key = dep + "[" + ",".join(sorted(req.extras)) + "]"
            if key not in seen:
                seen.add(key)
                todo.append((dep, tuple(sorted(req.extras))))
    return {k.split("[", 1)[0] for k in seen}


def test_every_makefile_pip_install_names_constraints():
    lines = (REPO / "Makefile").read_text().replace("\\\n", " ").splitlines()
    installs = [ln for ln in lines if re.search(r"pip install\b", ln)]
    assert len(installs) >= 4, installs  # .venv (pip, project, model), .venv-llama
    for line in installs:
        assert re.search(r"-c \S+", line), f"Makefile installs without constraints: {line.strip()}"


def test_llama_environment_is_pinned():
    pins = read_pins(REPO / "constraints" / "llama.txt")
    for name in ("llama-cpp-python", "fastapi", "starlette", "uvicorn", "pydantic", "numpy"):
        assert name in pins, f"constraints/llama.txt does not pin {name}"


def test_lock_covers_the_install_closure():
    try:
        metadata.distribution("fdd")
    except metadata.PackageNotFoundError:
        pytest.skip("fdd is not installed in this interpreter (run through `make test`)")
    pins = read_pins(REPO / "constraints" / "cpu-lock.txt")
    needed = closure("fdd", EXTRAS)
    assert {"torch", "transformers", "prefect", "datasets"} <= needed
    missing = sorted(needed - set(pins))
    assert not missing, f"constraints/cpu-lock.txt does not pin {missing}: run `make lock`"


def test_installed_versions_match_the_lock():
    stamp = Path(sys.prefix) / ".fdd-installed"
    if not stamp.is_file() or "constraints/cpu.txt" not in stamp.read_text():
        pytest.skip(
            f"{sys.prefix} was not built by `make` with constraints/cpu.txt "
            "(other constraints, e.g. a GPU install, resolve other versions)"
        )
    pins = read_pins(REPO / "constraints" / "cpu-lock.txt")
    stale = {}
    for name in sorted(closure("fdd", EXTRAS)):
        installed = metadata.version(name)
        if pins.get(name) not in (installed, installed.split("+", 1)[0]):
            stale[name] = (pins.get(name), installed)
    assert not stale, f"lock differs from the install (pinned, installed): {stale}"
