"""The hf throughput benchmark runs end to end (tiny model, a few tokens) and reports ratios.

The real numbers come from `python -m bench.bench_hf_generate` on the embedded model (see
docs/BENCHMARKS.md); this only keeps the script working as the backend changes.
"""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture
def keep_threads():
    """The bench sets torch's thread count for the process; give the next test its own."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_hf_generate_bench_smoke(tiny_causal_dir, tmp_path, keep_threads):
    from bench import bench_hf_generate

    out = tmp_path / "hf.json"
    result = bench_hf_generate.main(
        [
            "--model",
            str(tiny_causal_dir),
            "--prompts",
            "6",
            "--baseline-prompts",
            "2",
            "--max-tokens",
            "4",
            "--n",
            "2",
            "--batch-size",
            "4",
            "--threads",
            "1",
            "--no-llama",
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    rows = result["rows"]
    assert list(rows) == [
        "baseline: model.generate, 1 prompt at a time, greedy",
        "hf backend, greedy, 4 seq/batch",
        "hf backend, sampled n=2, 4 seq/batch",
    ]
    base, greedy, sampled = rows.values()
    assert (base["sequences"], greedy["sequences"], sampled["sequences"]) == (2, 6, 12)
    for row in rows.values():
        assert 0 < row["tokens"] <= row["sequences"] * 4
        assert row["seconds"] > 0
        assert row["tokens_per_s"] == pytest.approx(row["tokens"] / row["seconds"])
    assert base["vs_baseline"] == pytest.approx(1.0)
    assert result["torch_threads"] == 1


def test_sandbox_bench_smoke(tmp_path, capsys):
    """bench_sandbox runs end to end on a few programs, checks every answer, and writes
    what it prints (the real figures are in docs/BENCHMARKS.md)."""
    from bench import bench_sandbox

    out = tmp_path / "sandbox.json"
    result = bench_sandbox.main(["--n", "40", "--baseline-n", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    sandbox = result["sandbox"]
    assert sandbox["programs"] == 40 and sandbox["programs_per_s"] > 0
    parts = [sandbox[f"cpu_ms_per_program_{k}"] for k in ("caller", "workers", "children")]
    assert sandbox["cpu_ms_per_program"] == pytest.approx(sum(parts))
    assert result["baseline_serial"]["programs"] == 2
    assert result["speedup_vs_serial"] == pytest.approx(
        sandbox["programs_per_s"] / result["baseline_serial"]["programs_per_s"]
    )
    assert "| Sandbox," in capsys.readouterr().out


def test_sandbox_profile_sorts_samples_by_kind():
    from bench.profile_sandbox import _classify

    fork = ["copy_page_range", "dup_mmap", "copy_process", "kernel_clone", "_Fork"]
    assert _classify(fork, True) == ("fork (clone)", None)
    cow = ["copy_mc_enhanced_fast_string", "do_wp_page", "handle_mm_fault", "exc_page_fault"]
    assert _classify(cow, True) == ("page fault, copy-on-write", None)
    assert _classify(["filemap_map_pages", "exc_page_fault"], True)[0] == "page fault, other"
    assert _classify(["do_sys_poll", "__x64_sys_poll", "do_syscall_64"], True) == (
        "system calls",
        "poll",
    )
    assert _classify(["_PyEval_EvalFrameDefault"], False) == ("user space", None)
    assert _classify(["zap_pte_range", "exit_mmap", "do_exit", "do_group_exit"], True)[0] == (
        "process exit"
    )


def test_lab_strategies_bench_dry_run_prints_the_sweep_it_would_run(tmp_path, capsys):
    """The strategy comparison's driver (a real run takes most of an hour: docs/EVIDENCE.md):
    it starts the simulated teacher and builds the `fdd sweep` command, with a request
    cache of the experiment's own, so every teacher request is counted and known."""
    from bench import bench_lab_strategies

    root = tmp_path / "lab"
    rc = bench_lab_strategies.main(
        ["--root", str(root), "--seeds", "0,1", "--set", "rounds.n_rounds=1", "--dry-run"]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "simulated teacher on http://127.0.0.1:" in out and "not an LLM" in out
    sweep = next(line for line in out.splitlines() if line.startswith("$ "))
    assert " sweep configs/lab.yaml " in sweep
    assert f"--set storage.cache_dir={root / 'cache'} --set rounds.n_rounds=1" in sweep
    assert "--vary synthesis.strategy=fdd,errors_only,uniform,none --seeds 0,1" in sweep
    assert f"--out {root / 'exp'}" in sweep


def _round(rnd, test, hard, n_rows, origin, lab=None, requests=0, wall=None):
    return {
        "round": rnd,
        "metrics": {"lab_test": {"accuracy": test}, "lab_hard": {"accuracy": hard}},
        "dataset": {"n_rows": n_rows},
        "counts_by_origin": origin,
        "lab_metrics": lab or {},
        "teacher_usage": {"synthesize": {"requests": requests, "cache_hits": rnd % 2}}
        if requests
        else {},
        "wall_time_s": wall or {},
    }


def test_lab_strategies_summary_gives_mean_sd_over_seeds_and_pooled_lab_ratios():
    from bench.bench_lab_strategies import summarize

    def run(strategy, rounds):
        return {"config": {"synthesis": {"strategy": strategy}}, "rounds": rounds}

    lab1 = {"labels_correct": 9, "labels_accepted": 10, "paraphrases_caught": 1,
            "paraphrases_planted": 2}  # fmt: skip
    lab2 = {"labels_correct": 3, "labels_accepted": 5, "paraphrases_caught": 0,
            "paraphrases_planted": 2}  # fmt: skip
    runs = [
        run("none", [_round(0, 0.3, 0.0, 10, {"original": 10})]),
        run("fdd", [
            _round(0, 0.3, 0.0, 10, {"original": 10}),
            _round(1, 0.5, 0.1, 20, {"original": 10, "complex": 6, "similar": 4}, lab1, 8,
                   {"train": 100.0, "grade": 20.0}),
        ]),
        run("fdd", [
            _round(0, 0.5, 0.0, 12, {"original": 12}),
            _round(1, 0.7, 0.1, 22, {"original": 12, "complex": 8, "similar": 2}, lab2, 12,
                   {"train": 140.0}),
        ]),
    ]  # fmt: skip
    lines = summarize(runs).splitlines()
    assert lines[0].startswith("| strategy | round | seeds | lab_test | lab_hard |")
    body = lines[2:]
    assert [line.split(" | ")[0:2] for line in body] == [
        ["| fdd", "0"],
        ["| fdd", "1"],
        ["| none", "0"],
    ]  # FDD first, then the baselines
    assert body[0] == (
        "| fdd | 0 | 2 | 0.400 ± 0.141 | 0.000 ± 0.000 | 11.0 (11.0/0.0/0.0) |  |  "
        "| 0.0 (0.0) | shared |"
    )
    assert body[1] == (
        "| fdd | 1 | 2 | 0.600 ± 0.141 | 0.100 ± 0.000 | 21.0 (11.0/7.0/3.0) "
        "| 0.80 (12/15) | 0.25 (1/4) | 10.0 (11.0) | 130 |"
    )
    assert body[2].startswith("| none | 0 | 1 | 0.300 | 0.000 |")  # one seed: no spread


def test_filter_bench_smoke_streams_and_reports_recall_and_memory(tmp_path, capsys):
    from bench import bench_filter

    out = tmp_path / "filter.json"
    r = bench_filter.main(["--n", "3000", "--existing", "9000", "--baseline-sample", "60",
                           "--out", str(out)])  # fmt: skip
    assert json.loads(out.read_text()) == r
    assert r["existing"]["n"] == 9000
    assert r["kept"] + sum(r["dropped"].values()) == 3000
    planted = r["planted"]
    assert planted["exact_dup"]["recall"] == 1.0 and planted["malformed"]["recall"] == 1.0
    assert planted["contam_verbatim"]["recall"] == 1.0
    assert math.isfinite(r["filter_memory_mb"])  # measured (the kernel peak is resettable)
    assert "| planted |" in capsys.readouterr().out


def test_training_memory_profile_smoke(tiny_causal_dir):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "bench.profile_training_memory", "--model", str(tiny_causal_dir)]
    cmd += ["--examples", "8", "--batch-size", "4"]
    done = subprocess.run(  # its own process: the profile changes the allocator's policy
        cmd,
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    out = json.loads(done.stdout)
    assert out["batch_shape"][0] == 4 and out["target_tokens"] > 0
    assert out["saved_for_backward_mb"] > 0 and out["saved_by_shape_mb"]
    top = sum(mb for mb, _ in out["saved_by_shape_mb"].values())  # the 12 largest shapes
    assert 0 < top <= out["saved_for_backward_mb"] + 0.05
    assert out["peak_mb"] >= out["rss_after_load_mb"] > 0
    assert out["step_cpu_s"] > 0
    assert out["malloc"] == "fixed"
