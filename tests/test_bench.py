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
