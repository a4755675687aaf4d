"""Sweep definitions (plain, no Prefect): --vary parsing, variants, seeds, shared round 0,
and which variants a re-run runs again."""

from __future__ import annotations

import json

import pytest

from fdd_core.config import ConfigError, RunConfig
from fdd_core.experiments import (
    SweepSpec,
    expand,
    parse_seeds,
    parse_vary,
    prepare_experiment,
    round0_key,
    split_values,
    to_run,
    variant_config,
)


def test_split_values_keeps_brackets_together():
    assert split_values("a, b,[1,2],{x: 1, y: 2}") == ["a", "b", "[1,2]", "{x: 1, y: 2}"]


def test_parse_vary_and_seeds_errors_name_the_problem():
    assert parse_vary(["synthesis.strategy=fdd,none"]) == {"synthesis.strategy": ["fdd", "none"]}
    for bad, msg in [
        (["synthesis.strategy"], "KEY=V1,V2"),
        (["synthesis.strategy=fdd,,none"], "empty value"),
        (["teacher.seed=1,2"], "--seeds"),
        (["a.b=1", "a.b=2"], "twice"),
        (["a.b=1,1"], "repeated"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            parse_vary(bad)
    assert parse_seeds("0,1") == [0, 1] and parse_seeds(None) is None
    with pytest.raises(ConfigError, match="integers"):
        parse_seeds("0,x")


def test_cross_product_with_seeds_and_names():
    spec = SweepSpec(
        vary=parse_vary(["synthesis.strategy=fdd,none", "teacher.n_samples=1,4"]), seeds=[0, 1]
    )
    variants = expand(spec)
    assert len(variants) == 8
    assert variants[0].name == "strategy-fdd_n_samples-1_seed-0"
    assert variants[0].set_items() == [
        "synthesis.strategy=fdd",
        "teacher.n_samples=1",
        "teacher.seed=0",
        "training.seed=0",
    ]
    assert expand(SweepSpec())[0].name == "base"


def test_variant_config_puts_runs_in_the_experiment(tmp_path):
    spec = SweepSpec(base={"rounds": {"n_rounds": 1}}, vary={"synthesis.strategy": ["uniform"]})
    cfg = variant_config(spec, expand(spec)[0], tmp_path)
    assert cfg.synthesis.strategy == "uniform" and cfg.rounds.n_rounds == 1
    assert cfg.storage.root == str(tmp_path.resolve())
    assert cfg.storage.run_name == "strategy-uniform"
    assert cfg.storage.shared_round0 == str(tmp_path.resolve() / "shared")


def test_round0_key_ignores_synthesis_and_rounds_only():
    base = RunConfig()
    same = RunConfig.model_validate(
        {"synthesis": {"strategy": "none", "budget": 3}, "rounds": {"n_rounds": 5}}
    )
    assert round0_key(base) == round0_key(same)
    for other in (
        {"teacher": {"seed": 1}},
        {"training": {"seed": 1}},
        {"teacher": {"n_samples": 2}},
    ):
        assert round0_key(RunConfig.model_validate(other)) != round0_key(base), other


def test_prepare_groups_round0_marks_bad_configs_and_reruns_only_what_is_missing(tmp_path):
    spec = SweepSpec(vary=parse_vary(["synthesis.strategy=fdd,uniform,bogus"]), seeds=[0, 1])
    exp = prepare_experiment(spec, tmp_path, "e")
    by = {v.name: v for v in exp.variants}
    assert by["strategy-bogus_seed-0"].status == "failed"
    assert "synthesis.strategy" in by["strategy-bogus_seed-0"].error
    assert len(exp.shared_round0) == 2  # one per seed; fdd and uniform share
    assert sorted(len(g.variants) for g in exp.shared_round0) == [2, 2]
    assert len(to_run(exp)) == 4
    on_disk = json.loads((tmp_path / "experiment.json").read_text())
    assert [v["name"] for v in on_disk["variants"]] == [v.name for v in exp.variants]

    # One variant finished (record and run.json agree): a re-run leaves it alone.
    done = by["strategy-fdd_seed-0"]
    done.status = "completed"
    exp.save()
    run_dir = tmp_path / "strategy-fdd_seed-0"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"status": "completed"}))
    again = prepare_experiment(spec, tmp_path, "e")
    assert {v.name for v in to_run(again)} == {
        "strategy-uniform_seed-0",
        "strategy-fdd_seed-1",
        "strategy-uniform_seed-1",
    }
    # The same variant with a changed config (a new --set) is run again.
    changed = spec.model_copy(update={"overrides": ["rounds.n_rounds=3"]})
    assert "strategy-fdd_seed-0" in {
        v.name for v in to_run(prepare_experiment(changed, tmp_path, "e"))
    }
    again = prepare_experiment(spec, tmp_path, "e")
    again.variant("strategy-fdd_seed-0").status = "completed"
    again.save()
    assert "strategy-fdd_seed-0" not in {
        v.name for v in to_run(prepare_experiment(spec, tmp_path, "e"))
    }
    # A record that says completed while its run.json does not is run again.
    (run_dir / "run.json").write_text(json.dumps({"status": "failed"}))
    assert "strategy-fdd_seed-0" in {
        v.name for v in to_run(prepare_experiment(spec, tmp_path, "e"))
    }


def test_cli_errors_exit_2_with_the_reason(tmp_path, capsys):
    from fdd.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("rounds:\n  n_rounds: 1\n")
    assert main(["sweep", str(cfg), "--vary", "synthesis.strategy"]) == 2
    assert "KEY=V1,V2" in capsys.readouterr().err
    assert main(["sweep", str(cfg), "--seeds", "a"]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["compare", str(tmp_path)]) == 2
    assert "neither a run folder" in capsys.readouterr().err
