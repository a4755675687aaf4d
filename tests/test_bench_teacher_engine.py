"""The teacher-engine benchmark runs end to end on a tiny workload and reports per-round ratios.

The real numbers come from `python -m bench.bench_teacher_engine` (see docs/llama-server.md);
this only keeps the script working. The hf engine runs a tiny random model (same tokenizer);
the llama-server run needs the real binary (`make llama-server`) and skips without it.
"""

from __future__ import annotations

import json

import pytest

from fdd_core.backends.llama_server import find_binary, not_built_reason

torch = pytest.importorskip("torch")


@pytest.fixture
def keep_threads():
    """The bench sets torch's thread count for the process; give the next test its own."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _run(tiny_causal_dir, tmp_path, engines: str) -> dict:
    from bench import bench_teacher_engine

    out = tmp_path / "engine.json"
    result = bench_teacher_engine.main(
        [
            "--hf-model",
            str(tiny_causal_dir),
            "--problems",
            "2",
            "--n",
            "2",
            "--max-tokens",
            "4",
            "--threads",
            "1",
            "--parallel",
            "4",
            "--ctx-per-slot",
            "1024",
            "--rounds",
            "2",
            "--engines",
            engines,
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    return result


def _check_rows(result: dict, engines: list[str]) -> None:
    rows = result["rows"]
    assert len(rows) == 2 * len(engines) * 2  # rounds x engines x workloads
    # Rounds alternate the engine order.
    first = [r["engine"] for r in rows if r["round"] == 0][::2]
    second = [r["engine"] for r in rows if r["round"] == 1][::2]
    assert first == engines and second == engines[::-1]
    for r in rows:
        assert r["sequences"] == 4  # 2 problems x n=2
        assert 0 <= r["tokens"] <= 4 * 4 + 4  # re-tokenizing may split a token's text
        assert r["seconds"] > 0
    for engine in engines:
        summ = result["summary"][engine]
        assert len(summ["workload_seconds"]) == 2
        assert result["setup"][engine]["setup_s"] > 0
    assert result["summary"]["hf"]["tokens_per_s_vs_hf"] == pytest.approx([1.0, 1.0])
    assert "before" in result["loadavg"] and "after" in result["loadavg"]


def test_teacher_engine_bench_smoke_hf(tiny_causal_dir, tmp_path, keep_threads):
    result = _run(tiny_causal_dir, tmp_path, "hf,vllm")
    assert "vllm" in result["skipped"]  # no --vllm-python: skipped and said so
    _check_rows(result, ["hf"])


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.skipif(
    find_binary() is None,
    reason=not_built_reason(),
)
def test_teacher_engine_bench_smoke_llama_server(tiny_causal_dir, tmp_path, keep_threads):
    result = _run(tiny_causal_dir, tmp_path, "hf,llama-server")
    assert result["skipped"] == {}
    _check_rows(result, ["hf", "llama-server"])
    assert result["setup"]["llama-server"]["parallel"] == 4
