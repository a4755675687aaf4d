"""fdd compare on hand-written run records: means and spreads over seeds, reasoning-path
plot when teacher.n_samples varies, and clear errors for folders that are not runs."""

from __future__ import annotations

import json

import pytest

from fdd_core.compare import compare, write_comparison


def _run(folder, name, *, n_samples, seed, accs, rows):
    d = folder / name
    d.mkdir(parents=True)
    rounds = [
        {
            "round": r,
            "dataset": {"path": str(d), "version_id": f"v{r}", "n_rows": n},
            "counts_by_origin": {"original": rows[0], "similar": n - rows[0]},
            "metrics": {"gsm8k": {"accuracy": a}},
            "teacher_usage": {
                "label": {
                    "requests": 3 * r,
                    "prompt_tokens": 10,
                    "completion_tokens": 5,
                    "cache_hits": 0,
                }
            },
        }
        for r, (a, n) in enumerate(zip(accs, rows))
    ]
    record = {
        "status": "completed",
        "rounds": rounds,
        "config": {"teacher": {"n_samples": n_samples, "seed": seed}},
    }
    (d / "run.json").write_text(json.dumps(record))
    return d


def test_runs_group_by_name_and_paths_plot_appears_when_n_samples_varies(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    a = _run(tmp_path, "k1", n_samples=1, seed=0, accs=[0.1, 0.3], rows=[10, 14])
    b = _run(tmp_path, "k4", n_samples=4, seed=0, accs=[0.2, 0.5], rows=[20, 26])
    c = compare([a, b])
    rows = {(r["variant"], r["round"]): r for r in c.round_rows()}
    assert rows[("k4", 1)]["acc:gsm8k"] == 0.5 and rows[("k4", 1)]["sd:gsm8k"] == 0.0
    assert rows[("k4", 1)]["similar"] == 6 and rows[("k4", 1)]["teacher_requests"] == 3
    paths = c.paths_rows()
    assert [(p["n_samples"], p["acc:gsm8k"]) for p in paths] == [(1, 0.3), (4, 0.5)]
    out = write_comparison(c, tmp_path / "cmp")
    names = sorted(p.name for p in out["plots"])
    assert names == ["accuracy_by_paths.png", "accuracy_by_round.png"]
    for p in out["plots"]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and mpimg.imread(p).ndim == 3
    assert "Accuracy against reasoning paths" in out["markdown"].read_text()


def test_spread_over_seeds_is_the_sample_standard_deviation(tmp_path):
    from fdd_core.experiments import Experiment, SweepSpec, VariantRecord

    runs = [
        _run(tmp_path, f"v_seed-{s}", n_samples=4, seed=s, accs=[0.2, acc], rows=[10, 12])
        for s, acc in ((0, 0.4), (1, 0.6))
    ]
    Experiment(
        name="e",
        dir=str(tmp_path),
        spec=SweepSpec(),
        variants=[
            VariantRecord(name=r.name, seed=i, run_dir=str(r), status="completed")
            for i, r in enumerate(runs)
        ],
    ).save()
    c = compare([tmp_path])
    (summary,) = c.summary_rows()
    assert summary["variant"] == "v" and summary["seeds"] == 2
    assert summary["acc:gsm8k"] == pytest.approx(0.5)
    assert summary["sd:gsm8k"] == pytest.approx(0.1414, abs=1e-4)
    assert c.paths_rows() == []


def test_not_a_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a run folder"):
        compare([tmp_path])
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(ValueError, match="run.json: not valid JSON"):
        compare([tmp_path])
