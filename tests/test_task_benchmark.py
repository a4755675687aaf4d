"""tasks.benchmark passes storage.cache_dir on, like every task that loads a model."""

from __future__ import annotations

from pathlib import Path

from fdd_core.config import RunConfig, load_config


def test_benchmark_task_hands_the_cache_dir_to_evaluate_model(tmp_path, monkeypatch):
    import tasks.benchmark as mod

    seen = {}

    class Result:
        def summary(self):
            return {"n": 1, "accuracy": 1.0}

    def spy(model, benchmarks, **kwargs):
        seen.update(kwargs, model=model, benchmarks=list(benchmarks))
        return {"embedded": Result()}

    monkeypatch.setattr(mod, "benchmark_model", spy)  # the model load itself is not the point
    cfg = load_config(None, [f"storage.cache_dir={tmp_path / 'cache'}"])
    out = mod.benchmark_task.fn(
        None,
        cfg.student,
        cfg.evaluation,
        cfg.sandbox,
        str(tmp_path / "run"),
        1,
        "v",
        cache_dir=cfg.storage.cache_dir,
    )
    assert out == {"embedded": {"n": 1, "accuracy": 1.0}}
    assert seen["cache_dir"] == str(tmp_path / "cache")
    assert seen["model"] == cfg.student.model and seen["benchmarks"] == ["embedded"]
    assert Path(seen["out_dir"]) == tmp_path / "run" / "round-1" / "eval"


def test_the_round_flow_passes_storage_cache_dir_to_the_benchmark_task():
    import inspect

    import flows.round

    src = inspect.getsource(flows.round.fdd_round)
    call = src[src.index("benchmark_task.with_options") :].split("manifest =")[0]
    assert "cache_dir=cfg.storage.cache_dir" in call
    assert RunConfig().storage.cache_dir is None  # default: the user's cache folder
