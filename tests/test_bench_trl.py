"""Smoke tests of bench/bench_trl.py (fdd's training loop against TRL's SFTTrainer).

Tiny sizes on a tiny randomly initialised model with the embedded tokenizer; the real
measurement uses the embedded SmolLM2-135M (docs/BENCHMARKS.md). The TRL half needs the
`trl` package (the dev extra); without it that test skips and the fdd half still runs.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bench(args: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "bench.bench_trl", *args, "--out", str(out)]
    cmd += ["--examples", "4", "--batch-size", "2", "--repeats", "1", "--threads", "1"]
    done = subprocess.run(
        cmd,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| trainer | method |" in done.stdout
    return json.loads(out.read_text())


def _check_run(run: dict, tokens: int | None = None) -> None:
    assert run["steps"] == 2  # one epoch: 4 examples in batches of 2
    assert run["tokens"] == run["tokens_counted_by_trainer"] > run["target_tokens"] > 0
    if tokens is not None:
        assert run["tokens"] == tokens  # every trainer reads the same rows
    assert run["tokens_per_s"] > 0 and run["tokens_per_cpu_s"] > 0
    assert run["peak_rss_mb"] > 0 and math.isfinite(run["peak_rss_mb"])
    assert math.isfinite(run["loss_first"]) and math.isfinite(run["loss_mean"])
    assert run["torch_threads"] == 1


@pytest.mark.slow
def test_bench_trl_fdd_half(tiny_causal_dir, tmp_path):
    trainers = ["--trainers", "fdd,fdd_packed"]
    out = _bench(["--model", str(tiny_causal_dir), *trainers], tmp_path / "r.json")
    assert [(r["trainer"], r["method"]) for r in out["runs"]] == [
        ("fdd", "lora"),
        ("fdd_packed", "lora"),
        ("fdd", "full"),
        ("fdd_packed", "full"),
    ]
    runs = {(r["trainer"], r["method"]): r for r in out["runs"]}
    for (trainer, method), run in runs.items():
        _check_run(run, tokens=runs[("fdd", method)]["tokens"])
        if trainer == "fdd":
            assert run["tokens_per_s_vs_fdd"] == 1.0
            assert run["options"]["padding"] == "longest"
            assert run["padded_positions"] > run["tokens"]  # rows of other lengths: padding
        else:  # padding-free: one row per micro-batch, no padding computed
            assert run["options"]["padding"] == "packed"
            assert run["padded_positions"] == run["tokens"]
            assert run["target_tokens"] == runs[("fdd", method)]["target_tokens"]
    assert out["versions"]["trl"] is None


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("trl") is None,
    reason="trl is not installed (dev extra): the TRL half of bench_trl cannot run",
)
def test_bench_trl_against_sft_trainer(tiny_causal_dir, tmp_path):
    out = _bench(["--model", str(tiny_causal_dir), "--methods", "lora"], tmp_path / "r.json")
    runs = {r["trainer"]: r for r in out["runs"]}
    assert set(runs) == {"fdd", "fdd_packed", "trl_padding_free", "trl_padded"}
    for run in runs.values():
        _check_run(run, tokens=runs["fdd"]["tokens"])
        assert run["method"] == "lora"
    assert runs["trl_padding_free"]["options"]["padding_free"] is True
    assert runs["trl_padded"]["options"]["padding_free"] is False
    for name in ("trl_padding_free", "trl_padded"):
        assert runs[name]["options"]["completion_only_loss"] is True
        assert runs[name]["target_tokens"] == runs["fdd"]["target_tokens"]
    assert out["versions"]["trl"]


def test_bench_trl_rejects_bad_options(tmp_path):
    from bench import bench_trl

    with pytest.raises(SystemExit):
        bench_trl.main(["--methods", "qlora", "--out", str(tmp_path / "r.json")])
    with pytest.raises(SystemExit):
        bench_trl.main(["--trainers", "trl_padded", "--out", str(tmp_path / "r.json")])
    assert not (tmp_path / "r.json").exists()
