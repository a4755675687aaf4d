"""The backend table: a toy backend added through one row is usable everywhere.

The toy backend is a test double (it answers every program prompt with the sum of the
question's numbers, like tests/servers/scripted_teacher.py); what is real here is the path
it takes: config validation, `--set` overrides, preflight, the flows' GPU decision, the
per-process memo and a real stage (the rationale task's function) run through the table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from fdd_core.backends import clear_backends, get_backend, make_backend
from fdd_core.backends.base import BackendBase, Completion, check_prompts
from fdd_core.backends.registry import (
    BACKENDS,
    BackendSpec,
    backend_spec,
    register_backend,
    unregister_backend,
)
from fdd_core.config import (
    ConfigError,
    ModelConfig,
    SandboxConfig,
    StorageConfig,
    TeacherConfig,
    load_config,
)
from fdd_core.preflight import check_model
from fdd_core.schemas import Problem
from fdd_core.stages import read_problems, write_problems
from tests.servers.scripted_teacher import answer, numbers_in, world_question


class ToyConfig(ModelConfig):
    """A toy backend's config: one field of its own."""

    backend: Literal["toy"] = Field("toy", description="The toy backend (a test double).")
    flavour: str = Field("sum", description="A field only the toy backend takes.")


class ToyBackend(BackendBase):
    name = "toy"

    def __init__(self, cfg: ToyConfig) -> None:
        self.model_id = f"toy:{cfg.model}:{cfg.flavour}"
        self.calls = 0

    def generate(self, prompts, params):
        check_prompts(prompts)
        self.calls += 1
        texts = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
        return [
            [Completion(text=answer(t, params.seed, j)) for j in range(params.n)] for t in texts
        ]


PREFLIGHT_SEEN: list[tuple[str, str]] = []


def _preflight(who: str, cfg: ToyConfig, cache_dir: str | None) -> None:
    PREFLIGHT_SEEN.append((who, cfg.flavour))
    if cfg.flavour == "broken":
        raise ConfigError(f"{who}.flavour: the toy backend cannot do 'broken'")


@pytest.fixture
def toy():
    register_backend(
        BackendSpec(
            name="toy",
            config=ToyConfig,
            make=lambda cfg, cache_dir, progress: ToyBackend(cfg),
            preflight=_preflight,
            uses_gpu=lambda cfg: False,
            memo_key=lambda cfg, cache_dir: ("toy", cfg.model, cfg.flavour),
        )
    )
    yield
    clear_backends()
    unregister_backend("toy")


def test_a_registered_backend_is_configurable_from_yaml_and_set(toy, tmp_path):
    p = tmp_path / "cfg.yaml"
    p.write_text("teacher:\n  backend: toy\n  flavour: plain\n  n_samples: 2\n")
    cfg = load_config(p)
    assert isinstance(cfg.teacher, ToyConfig) and isinstance(cfg.teacher, TeacherConfig)
    assert (cfg.teacher.flavour, cfg.teacher.n_samples) == ("plain", 2)
    over = load_config(None, ["teacher.backend=toy", "teacher.flavour=x"])
    assert over.teacher.flavour == "x"
    assert type(TeacherConfig(backend="toy")).__name__ == "ToyTeacherConfig"
    # A field of another backend names that backend; the toy's field on hf names the toy.
    with pytest.raises(ConfigError, match="base_url applies to backend 'openai'"):
        load_config(None, ["teacher.backend=toy", "teacher.base_url=http://h/v1"])
    with pytest.raises(ConfigError, match="flavour applies to backend 'toy', not to backend 'hf'"):
        load_config(None, ["teacher.flavour=x"])


def test_unregistered_backend_is_refused_again(toy):
    unregister_backend("toy")
    with pytest.raises(ConfigError, match=r"teacher.backend = 'toy': must be one of 'hf'"):
        load_config(None, ["teacher.backend=toy"])


def test_the_row_drives_make_memo_preflight_and_gpu(toy):
    from flows.common import teacher_on_gpu

    cfg = load_config(None, ["teacher.backend=toy", "teacher.flavour=broken"])
    with pytest.raises(ConfigError, match="cannot do 'broken'"):
        check_model("teacher", cfg.teacher, None)
    assert PREFLIGHT_SEEN[-1] == ("teacher", "broken")
    assert teacher_on_gpu(cfg) is False
    a = get_backend(cfg.teacher)
    assert isinstance(a, ToyBackend) and get_backend(cfg.teacher) is a
    assert make_backend(cfg.teacher) is not a
    assert a.describe() == {"backend": "toy", "model": a.model_id}
    assert backend_spec("toy") is BACKENDS["toy"]


def test_a_stage_runs_with_the_registered_backend(toy, tmp_path):
    from tasks.rationales import rationale_shard

    cfg = load_config(
        None, ["teacher.backend=toy", "teacher.n_samples=2", f"storage.cache_dir={tmp_path}"]
    )
    problems = []
    for i in range(4):
        q = world_question(f"toy-{i}", 2)
        problems.append(Problem.create(q, float(sum(numbers_in(q))), source_dataset="world"))
    ref = write_problems(tmp_path, "problems", problems)
    result = rationale_shard.fn(
        ref,
        0,
        (0, 4),
        cfg.teacher,
        SandboxConfig(isolate_network=False),
        StorageConfig(cache_dir=str(tmp_path)),
        str(tmp_path / "run"),
        0,
        "test",
    )
    rows = [json.loads(line) for line in Path(result.path).read_text().splitlines()]
    assert result.stats["problems"] == 4 and result.n_rows == len(rows) > 0
    assert {r["problem_id"] for r in rows} <= {p.id for p in read_problems(ref)}
    assert get_backend(cfg.teacher).calls >= 1  # the memoized toy instance did the work


def test_registering_keeps_the_other_backends_classes(tmp_path):
    import pickle

    from fdd_core.config import RunConfig

    before = RunConfig()
    cls = type(before.teacher)
    register_backend(
        BackendSpec(
            name="toy",
            config=ToyConfig,
            make=lambda cfg, cache_dir, progress: ToyBackend(cfg),
            preflight=_preflight,
            uses_gpu=lambda cfg: False,
            memo_key=lambda cfg, cache_dir: None,
        )
    )
    try:
        after = RunConfig()
        assert type(after.teacher) is cls  # the same class object, not a rebuilt twin
        assert pickle.loads(pickle.dumps(before)) == before
        assert RunConfig(teacher=before.teacher).teacher is before.teacher
    finally:
        unregister_backend("toy")
    assert type(RunConfig().teacher) is cls
