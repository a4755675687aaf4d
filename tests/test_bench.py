"""The hf throughput benchmark runs end to end (tiny model, a few tokens) and reports ratios.

The real numbers come from `python -m bench.bench_hf_generate` on the embedded model (see
docs/BENCHMARKS.md); this only keeps the script working as the backend changes.
"""

from __future__ import annotations

import json

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
