"""Throughput of the hf backend against the plain one-prompt-at-a-time `model.generate` loop.

    python -m bench.bench_hf_generate [--prompts 64] [--max-tokens 64] [--n 4]
        [--batch-size 64] [--baseline-prompts 6] [--model smollm2-135m-instruct] [--no-llama]
        [--threads N] [--dtype auto|bfloat16] [--skip-greedy] [--out FILE]

Prompts are the teacher's real few-shot Program-of-Thought chat prompts
(`fdd_core.prompts.program_messages`, about 400 tokens each with the chat template) over the
embedded training questions. Measured in one run, on the same model and thread count:

- baseline: `model.generate` greedy, one prompt at a time, on the first
  `--baseline-prompts` prompts (it is the slow path, so a subset; tokens/s is what compares);
- hf backend greedy over all prompts (the student's evaluation workload), and sampled with
  `n` samples per prompt (temperature 0.7, top-p 0.95, seeded), as the teacher runs; both
  with the same `--batch-size` sequences per forward batch;
- llama.cpp single stream (Q4_1 GGUF, greedy) through `.venv-llama/bin/python` (`make llama-python`)
  when that interpreter can import llama_cpp (skipped otherwise, and said so).

Tokens are generated tokens (EOS included when emitted), never prompt tokens. Prints a
markdown table and writes bench/results/hf_generate.json (or `--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "hf_generate.json"
LLAMA_PYTHON = REPO / ".venv-llama" / "bin" / "python"


def load_prompts(count: int) -> list[list[dict[str, str]]]:
    """The teacher's program prompt over embedded questions (cycled if fewer than count)."""
    from fdd_core.prompts import program_messages

    rows = (REPO / "fdd_core" / "data" / "embedded_train.jsonl").read_text().splitlines()
    questions = [json.loads(r)["question"] for r in rows if r.strip()]
    return [program_messages(questions[i % len(questions)]) for i in range(count)]


def run_baseline(backend, prompts, max_tokens: int) -> dict:
    """transformers' own greedy generate, one unpadded prompt at a time."""
    import torch

    tok, model = backend.tokenizer, backend.model
    generated = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for prompt in prompts:
            text, special = backend.render(prompt)
            enc = tok(text, add_special_tokens=special, return_tensors="pt")
            out = model.generate(
                **enc, do_sample=False, max_new_tokens=max_tokens, pad_token_id=tok.pad_token_id
            )
            generated += out.shape[1] - enc["input_ids"].shape[1]
    seconds = time.perf_counter() - start
    return {
        "prompts": len(prompts),
        "sequences": len(prompts),
        "tokens": generated,
        "seconds": seconds,
    }


def run_backend(backend, prompts, params) -> dict:
    start = time.perf_counter()
    out = backend.generate(prompts, params)
    seconds = time.perf_counter() - start
    tokens = sum(c.completion_tokens for row in out for c in row)
    stopped = sum(c.finish_reason == "stop" for row in out for c in row)
    return {
        "prompts": len(prompts),
        "sequences": sum(len(row) for row in out),
        "tokens": tokens,
        "seconds": seconds,
        "finished_by_eos": stopped,
        "sample_text": out[0][0].text[:200],
    }


LLAMA_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from llama_cpp import Llama
    args = json.loads(sys.argv[1])
    llm = Llama(model_path=args["gguf"], n_ctx=2048, n_threads=args["threads"], verbose=False)
    tokens = 0
    start = time.perf_counter()
    for messages in args["prompts"]:
        out = llm.create_chat_completion(
            messages=messages, max_tokens=args["max_tokens"], temperature=0.0
        )
        tokens += out["usage"]["completion_tokens"]
    print(json.dumps({"tokens": tokens, "seconds": time.perf_counter() - start}))
    """
)


def run_llama(prompts, max_tokens: int, threads: int) -> dict | str:
    """llama.cpp single stream on the embedded GGUF, or the reason it could not run."""
    if not LLAMA_PYTHON.exists():
        return f"{LLAMA_PYTHON} not found"
    probe = subprocess.run(
        [str(LLAMA_PYTHON), "-c", "import llama_cpp"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        return f"llama_cpp not importable from {LLAMA_PYTHON}: {probe.stderr.strip()[-200:]}"
    from fdd_core.models import embedded_gguf_path

    args = {
        "gguf": str(embedded_gguf_path()),
        "prompts": prompts,
        "max_tokens": max_tokens,
        "threads": threads,
    }
    proc = subprocess.run(
        [str(LLAMA_PYTHON), "-c", LLAMA_SCRIPT, json.dumps(args)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return f"llama.cpp run failed: {proc.stderr.strip()[-300:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"prompts": len(prompts), "sequences": len(prompts), **result}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="sequences per forward batch, the backend's batch_size (greedy: that many "
        "prompts; sampled: batch_size // n prompts)",
    )
    ap.add_argument("--baseline-prompts", type=int, default=6)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for every run (default: torch's own choice, one per core)",
    )
    ap.add_argument("--skip-greedy", action="store_true", help="only the sampled run")
    ap.add_argument("--no-llama", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where the JSON result goes")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from fdd_core.backends.base import SamplingParams
    from fdd_core.backends.hf import HFBackend

    prompts = load_prompts(args.prompts)
    backend = HFBackend(args.model, batch_size=args.batch_size, dtype=args.dtype, progress=False)
    prompt_tokens = [len(ids) for ids in backend.encode(prompts)]
    threads = torch.get_num_threads()
    rows: dict[str, dict | str] = {}

    # Warm-up: first calls pay one-off allocations; keep them out of every measurement.
    backend.generate(prompts[:2], SamplingParams(max_tokens=4))

    rows["baseline: model.generate, 1 prompt at a time, greedy"] = run_baseline(
        backend, prompts[: args.baseline_prompts], args.max_tokens
    )
    if not args.skip_greedy:
        rows[f"hf backend, greedy, {args.batch_size} seq/batch"] = run_backend(
            backend, prompts, SamplingParams(max_tokens=args.max_tokens)
        )
    sampled = SamplingParams(
        n=args.n, temperature=0.7, top_p=0.95, max_tokens=args.max_tokens, seed=0
    )
    rows[f"hf backend, sampled n={args.n}, {args.batch_size} seq/batch"] = run_backend(
        backend, prompts, sampled
    )
    if not args.no_llama:
        rows["llama.cpp Q4_1, 1 stream, greedy"] = run_llama(
            prompts[: args.baseline_prompts], args.max_tokens, threads
        )

    base = rows["baseline: model.generate, 1 prompt at a time, greedy"]
    base_rate = base["tokens"] / base["seconds"]
    for row in rows.values():
        if isinstance(row, dict):
            row["tokens_per_s"] = row["tokens"] / row["seconds"]
            row["vs_baseline"] = row["tokens_per_s"] / base_rate
    result = {
        "benchmark": "hf_generate",
        "command": "python -m bench.bench_hf_generate " + " ".join(argv or sys.argv[1:]),
        "model": backend.model_id,
        "device": backend.device,
        "dtype": str(backend.model.dtype),
        "torch_threads": threads,
        "cpu_count": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "platform": platform.platform(),
        "max_tokens": args.max_tokens,
        "prompt_tokens_mean": sum(prompt_tokens) / len(prompt_tokens),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(render(result))
    return result


def render(result: dict) -> str:
    lines = [
        f"model {result['model']} on {result['device']} ({result['dtype']}, "
        f"{result['torch_threads']} threads, load avg {result['load_avg_1m']:.1f}); "
        f"prompts {result['prompt_tokens_mean']:.0f} tokens on average, "
        f"max_tokens {result['max_tokens']}",
        "",
        "| run | prompts | sequences | generated tokens | seconds | tokens/s | vs baseline |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in result["rows"].items():
        if isinstance(row, str):
            lines.append(f"| {name} | - | - | - | - | - | skipped: {row} |")
            continue
        lines.append(
            f"| {name} | {row['prompts']} | {row['sequences']} | {row['tokens']} | "
            f"{row['seconds']:.1f} | {row['tokens_per_s']:.1f} | {row['vs_baseline']:.1f}x |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
