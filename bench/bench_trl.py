"""Benchmark of one round's fine-tuning: fdd's training loop against TRL's `SFTTrainer`.

    python -m bench.bench_trl [--model smollm2-135m-instruct] [--methods lora,full]
                              [--trainers fdd,fdd_packed,trl_padding_free,trl_padded]
                              [--examples 40]
                              [--batch-size 8] [--threads 2] [--repeats 2]

Trains the same model on the same examples (a round's D_r, built as bench/bench_training.py
builds it: GSM8K train problems with their calculator annotations as Program-of-Thought
programs, or embedded problems without ../shared) for one epoch, with the same batch size,
learning rate, schedule, clipping, max_seq_len, seed, fp32 on the CPU, no gradient
checkpointing, and the same LoRA settings (fdd's defaults: r, alpha, dropout, all-linear)
or full fine-tuning. Each run is its own fresh process (each peak RSS is its own); runs
alternate between trainers, `--repeats` times, and each keeps its fastest time and its
highest peak.

Trainers:

- `fdd`: `fdd_core.training.train_student` (length-grouped batches padded to their own
  longest row, loss on program + EOS only, LM head on target positions only);
- `fdd_packed`: the same with `padding_free="on"` (each micro-batch of the same plan
  flattened into one row without padding, position ids restarting per example, no
  attention mask: the block-diagonal SDPA mask that transformers builds from them);
- `trl_padding_free`: `trl.SFTTrainer`, `completion_only_loss=True`, `padding_free=True`
  (every batch flattened into one row without padding; on a CPU the attention is SDPA
  with a block-diagonal mask that transformers builds from the position ids);
- `trl_padded`: `trl.SFTTrainer`, `completion_only_loss=True`, padding to the longest row
  of each batch, `train_sampling_strategy="group_by_length"`.

Both trainers get exactly the same token sequences: TRL receives the dataset already
tokenized by fdd's own `encode_examples` (`input_ids` and a `completion_mask` that is 1 on
the program + EOS tokens), so the token counts are equal and the loss covers the same
positions. Throughput counts non-padding input tokens (prompt + program + EOS), the same
number for every trainer (one epoch over the same rows); it is cross-checked against each
trainer's own counter. Writes bench/results/trl.json (or `--out`) and prints a markdown
table with ratios against `fdd` for the same method; every finished run is also appended
to `<out>.runs.jsonl` as it ends (what is left when a long sweep is stopped).

Differences that remain, by design of each trainer: TRL computes the LM head on every
position on a CPU (its fused head scores only the target positions where Triton runs) and
also entropy and top-1 accuracy for its logs; fdd projects only the target positions.
fdd fixes glibc's mmap threshold for CPU training (fdd_core/training/memory.py); a TRL
child does not, unless MALLOC_MMAP_THRESHOLD_ is set in its environment. The warm-up
step is not identical (transformers starts at learning rate 0, fdd at half the peak).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "trl.json"
TRAINERS = ("fdd", "fdd_packed", "trl_padding_free", "trl_padded")
METHODS = ("lora", "full")
EMBEDDED = "smollm2-135m-instruct"


def _config(args, method: str, *, packed: bool = False):
    """The fdd training settings every trainer follows (`packed`: fdd's padding-free)."""
    from fdd_core.config import TrainingConfig

    return TrainingConfig(
        method=method,
        epochs=1.0,
        batch_size=args.batch_size,
        grad_accum=1,
        learning_rate=args.learning_rate,
        max_seq_len=args.max_seq_len,
        group_by_length=True,
        padding_free="on" if packed else "off",
        seed=args.seed,
        bf16="off",
        gradient_checkpointing="off",
        isolation="inline",
    )


def _examples(args):
    from bench.bench_training import _examples as round_examples

    return round_examples(args.examples, args.seed)


def _child_fdd(args, method: str, packed: bool) -> dict:
    from fdd_core.training import train_student

    examples, _ = _examples(args)
    cfg = _config(args, method, packed=packed)
    with tempfile.TemporaryDirectory() as tmp:
        train_student(examples, args.model, cfg, Path(tmp) / "m", device="cpu", progress=False)
        meta = json.loads((Path(tmp) / "m" / "meta.json").read_text())
    losses = meta["loss_per_step"]
    return {
        "steps": meta["steps"],
        "tokens_counted_by_trainer": meta["tokens_seen"],
        "target_tokens": meta["target_tokens"],
        "padded_positions": meta["padded_tokens"],
        "train_time_s": meta["train_time_s"],
        "train_cpu_s": meta["train_cpu_s"],
        "loss_first": losses[0],
        "loss_mean": sum(losses) / len(losses),
        "options": {
            "padding": meta["padding"],  # "packed" (padding-free) or "longest"
            "padding_free": cfg.padding_free,
            "group_by_length": True,
            "loss": "program + EOS",
        },
    }


def _child_trl(args, method: str, padding_free: bool) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from fdd_core.models import resolve_model
    from fdd_core.training.batching import IGNORE_INDEX, encode_examples
    from fdd_core.training.modeling import _load_base

    examples, _ = _examples(args)
    cfg = _config(args, method)
    model, tokenizer, seq2seq = _load_base(resolve_model(args.model))
    if seq2seq:
        raise SystemExit("bench_trl compares causal language models only (SFTTrainer)")
    encoded, _ = encode_examples(examples, tokenizer, seq2seq=False, max_seq_len=cfg.max_seq_len)
    data = Dataset.from_dict(
        {
            "input_ids": [list(e.input_ids) for e in encoded],
            "completion_mask": [[int(t != IGNORE_INDEX) for t in e.labels] for e in encoded],
        }
    )
    steps = math.ceil(len(encoded) / cfg.batch_size)  # one epoch, as fdd's loop
    peft_config = None
    if method == "lora":
        target = cfg.lora_target_modules
        peft_config = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=target if target == "all-linear" else list(target),
            task_type="CAUSAL_LM",
        )

    class Clock(TrainerCallback):
        """Time of the training loop only (as fdd's train_time_s): first step to last."""

        def on_train_begin(self, *a, **k):
            self.wall, self.cpu = time.perf_counter(), time.process_time()

        def on_train_end(self, *a, **k):
            self.wall = time.perf_counter() - self.wall
            self.cpu = time.process_time() - self.cpu

    clock = Clock()
    options = {
        "completion_only_loss": True,
        "padding_free": padding_free,
        "packing": False,
        "max_length": None,  # rows come truncated to max_seq_len by fdd's encode_examples
        "train_sampling_strategy": "random" if padding_free else "group_by_length",
        "loss_type": "nll",
        "bf16": False,
        "gradient_checkpointing": False,
    }
    with tempfile.TemporaryDirectory() as tmp:
        sft = SFTConfig(
            output_dir=tmp,
            use_cpu=True,
            per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.grad_accum,
            num_train_epochs=cfg.epochs,
            learning_rate=cfg.learning_rate,
            lr_scheduler_type="linear",
            warmup_steps=math.ceil(cfg.warmup_ratio * steps),
            weight_decay=cfg.weight_decay,
            max_grad_norm=1.0,
            optim="adamw_torch",
            seed=cfg.seed,
            data_seed=cfg.seed,
            save_strategy="no",
            report_to="none",
            logging_steps=1,
            disable_tqdm=True,
            dataloader_num_workers=0,
            dataloader_pin_memory=False,
            fp16=False,
            **options,
        )
        trainer = SFTTrainer(
            model=model,
            args=sft,
            train_dataset=data,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[clock],
        )
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        # The positions TRL's prepared labels put in the loss (completion_only_loss).
        targets = sum(t != IGNORE_INDEX for row in trainer.train_dataset["labels"] for t in row)
        counted = int(trainer._total_train_tokens)  # TRL's own count of input tokens
        step_count = trainer.state.global_step
    return {
        "steps": step_count,
        "tokens_counted_by_trainer": counted,
        "target_tokens": int(targets),
        "padded_positions": None,
        "train_time_s": round(clock.wall, 3),
        "train_cpu_s": round(clock.cpu, 3),
        "loss_first": losses[0] if losses else float("nan"),
        "loss_mean": sum(losses) / len(losses) if losses else float("nan"),
        "options": options,
        "torch_threads_after": torch.get_num_threads(),
    }


def _child(trainer: str, method: str, args) -> dict:
    """One training run in this (fresh) process; returns its measurements."""
    import torch
    from transformers import AutoTokenizer

    from bench.procmem import _peak_rss_mb
    from fdd_core.models import resolve_model
    from fdd_core.training.batching import encode_examples

    torch.set_num_threads(args.threads)
    # The tokens every trainer reads: one epoch over the same rows (non-padding tokens).
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    examples, _ = _examples(args)
    encoded, n_truncated = encode_examples(
        examples, tokenizer, seq2seq=False, max_seq_len=args.max_seq_len
    )
    tokens = sum(e.length for e in encoded)
    del tokenizer, examples, encoded
    if trainer in ("fdd", "fdd_packed"):
        run = _child_fdd(args, method, packed=trainer == "fdd_packed")
    else:
        run = _child_trl(args, method, padding_free=trainer == "trl_padding_free")
    peak = _peak_rss_mb()
    if run["tokens_counted_by_trainer"] != tokens:
        raise RuntimeError(
            f"{trainer} counted {run['tokens_counted_by_trainer']} input tokens, expected {tokens}"
        )
    run.update(
        trainer=trainer,
        method=method,
        tokens=tokens,
        n_truncated=n_truncated,
        tokens_per_s=tokens / run["train_time_s"],
        tokens_per_cpu_s=tokens / run["train_cpu_s"],
        peak_rss_mb=peak,
        torch_threads=torch.get_num_threads(),
    )
    return run


def _child_cmd(trainer: str, method: str, args) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.bench_trl",
        "--child",
        f"{trainer}:{method}",
        "--model",
        args.model,
        "--examples",
        str(args.examples),
        "--batch-size",
        str(args.batch_size),
        "--learning-rate",
        str(args.learning_rate),
        "--max-seq-len",
        str(args.max_seq_len),
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
    ]


def _csv(value: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if not items or bad:
        raise argparse.ArgumentTypeError(
            f"{what}: expected some of {', '.join(allowed)}, got {value!r}"
        )
    return items


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "n/a"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=EMBEDDED, help="model name or local checkpoint folder")
    ap.add_argument("--methods", default="lora,full", help="comma-separated: lora, full")
    ap.add_argument("--trainers", default=",".join(TRAINERS), help="comma-separated")
    ap.add_argument("--examples", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--learning-rate", type=float, default=2e-4)
    ap.add_argument("--max-seq-len", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads per run")
    ap.add_argument("--repeats", type=int, default=2, help="runs per trainer and method")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.examples < 1 or args.batch_size < 1 or args.threads < 1 or args.repeats < 1:
        ap.error("--examples, --batch-size, --threads and --repeats must be at least 1")
    if args.child:
        trainer, method = args.child.split(":")
        print(json.dumps(_child(trainer, method, args)))
        return 0
    try:
        methods = _csv(args.methods, METHODS, "--methods")
        trainers = _csv(args.trainers, TRAINERS, "--trainers")
    except argparse.ArgumentTypeError as exc:
        ap.error(str(exc))
    if "fdd" not in trainers:
        ap.error("--trainers must include fdd (the ratios are against it)")
    trl_version = None
    if any(t.startswith("trl") for t in trainers):
        try:
            from importlib.metadata import version

            trl_version = version("trl")
        except Exception:  # noqa: BLE001 - PackageNotFoundError: a clear error below
            ap.error("the trl trainers need the `trl` package (pip install trl, dev extra)")

    from fdd_core.models import resolve_model

    resolve_model(args.model)  # convert the embedded model once, outside the timed runs
    _, source = _examples(args)
    load_before = _loadavg()
    best: dict[tuple[str, str], dict] = {}
    partial = args.out.with_suffix(".runs.jsonl")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}
    for rep in range(args.repeats):
        order = [(t, m) for m in methods for t in trainers]
        if rep % 2:  # alternate A/B/C then C/B/A so no trainer always runs first
            order = [(t, m) for m in methods for t in reversed(trainers)]
        for trainer, method in order:
            print(
                f"running {trainer} {method} ({rep + 1}/{args.repeats}) ...",
                file=sys.stderr,
                flush=True,
            )
            done = subprocess.run(
                _child_cmd(trainer, method, args),
                check=False,
                cwd=REPO,
                capture_output=True,
                text=True,
                env=env,
            )
            if done.returncode:
                print(done.stderr[-4000:], file=sys.stderr)
                return 1
            run = json.loads(done.stdout.strip().splitlines()[-1])
            run["load_during"] = [_loadavg()]
            with open(partial, "a") as f:  # every finished run, should the sweep be stopped
                f.write(json.dumps({"repeat": rep, **run}) + "\n")
            old = best.get((trainer, method))
            if old is not None:
                for key in ("train_time_s", "train_cpu_s"):
                    run[key] = min(run[key], old[key])
                run["peak_rss_mb"] = max(run["peak_rss_mb"], old["peak_rss_mb"])
                run["tokens_per_s"] = run["tokens"] / run["train_time_s"]
                run["tokens_per_cpu_s"] = run["tokens"] / run["train_cpu_s"]
                run["load_during"] = old["load_during"] + run["load_during"]
            best[(trainer, method)] = run
    runs = [best[(t, m)] for m in methods for t in trainers]
    for r in runs:
        base = best[("fdd", r["method"])]
        r["tokens_per_s_vs_fdd"] = r["tokens_per_s"] / base["tokens_per_s"]
        r["tokens_per_cpu_s_vs_fdd"] = r["tokens_per_cpu_s"] / base["tokens_per_cpu_s"]
        r["peak_rss_vs_fdd"] = r["peak_rss_mb"] / base["peak_rss_mb"]
    import peft
    import torch
    import transformers

    result = {
        "bench": "trl",
        "model": args.model,
        "examples": args.examples,
        "source": source,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "max_seq_len": args.max_seq_len,
        "epochs": 1,
        "torch_threads": args.threads,
        "repeats": args.repeats,
        "dtype": "float32",
        "versions": {
            "trl": trl_version,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
        "runs": runs,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    _write_atomically(args.out, json.dumps(result, indent=2) + "\n")

    print(
        f"\nOne round's fine-tuning, {args.model}, {args.examples} examples ({source}), "
        f"batch {args.batch_size}, one epoch, fp32 CPU, torch threads {args.threads}, "
        f"best of {args.repeats}; trl {trl_version or 'not run'}\n"
    )
    print(
        "| trainer | method | steps | tokens | tokens/s (wall) | vs fdd | tokens/CPU-s | vs fdd "
        "| peak RSS MB | vs fdd | first / mean loss |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(
            f"| {r['trainer']} | {r['method']} | {r['steps']} | {r['tokens']} "
            f"| {r['tokens_per_s']:.0f} | {r['tokens_per_s_vs_fdd']:.2f}x "
            f"| {r['tokens_per_cpu_s']:.0f} | {r['tokens_per_cpu_s_vs_fdd']:.2f}x "
            f"| {r['peak_rss_mb']:.0f} | {r['peak_rss_vs_fdd']:.2f}x "
            f"| {r['loss_first']:.3f} / {r['loss_mean']:.3f} |"
        )
    print(f"\nload average before: {load_before}; after: {result['loadavg_after']}")
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
