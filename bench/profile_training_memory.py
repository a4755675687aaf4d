"""Where a training step's host memory goes: tensors autograd keeps, against peak RSS.

    python -m bench.profile_training_memory [--model smollm2-135m-instruct] [--method lora]
        [--gc off|on] [--lora-dropout 0.05] [--malloc fixed|glibc] [--examples 40]

One forward and backward pass over the largest batch (8 examples) of bench_training's data,
one torch thread. Reports parameter and trainable bytes, every tensor saved for backward
(grouped by shape, parameters excluded) and the RSS after each phase, with the kernel's
high-water mark reset before each (`/proc/self/clear_refs`). `--malloc glibc` leaves
glibc's dynamic mmap threshold as it is (the behaviour before fdd_core/training/memory.py);
`fixed` applies `return_freed_memory()`, as `train_student` does on CPU. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from bench.procmem import _peak_rss_mb, _reset_peak_rss, _rss_mb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--method", choices=("lora", "full"), default="lora")
    ap.add_argument("--gc", choices=("off", "on"), default="off")
    ap.add_argument("--lora-dropout", type=float, default=0.05)
    ap.add_argument("--malloc", choices=("fixed", "glibc"), default="fixed")
    ap.add_argument("--examples", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args(argv)

    import torch

    from bench.bench_training import _examples
    from fdd_core.config import TrainingConfig
    from fdd_core.models import resolve_model
    from fdd_core.training.batching import collate, encode_examples, plan_batches
    from fdd_core.training.memory import return_freed_memory
    from fdd_core.training.modeling import _apply_lora, _load_base, _target_loss

    torch.set_num_threads(1)
    applied = return_freed_memory() if args.malloc == "fixed" else False
    examples, source = _examples(args.examples, 0)
    cfg = TrainingConfig(method=args.method, lora_dropout=args.lora_dropout, max_seq_len=1024)
    model, tokenizer, seq2seq = _load_base(resolve_model(args.model))
    if seq2seq:
        raise SystemExit("profile_training_memory: causal models only")
    if args.gc == "on":
        model.config.use_cache = False
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    if args.method == "lora":
        model = _apply_lora(model, cfg, seq2seq)
    encoded, _ = encode_examples(examples, tokenizer, seq2seq=False, max_seq_len=1024)
    plan = plan_batches(
        [e.length for e in encoded], args.batch_size, seed=0, epoch=0, group_by_length=True
    )
    batch = collate([encoded[i] for i in plan[0]], tokenizer.pad_token_id)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    model.train()
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    by_shape: Counter = Counter()
    count: Counter = Counter()

    def pack(t):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in param_ptrs and ptr not in seen:
            seen.add(ptr)
            key = f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}"
            by_shape[key] += storage.nbytes()
            count[key] += 1
        return t

    import time

    rss_loaded = _rss_mb()
    cpu_start = time.process_time()
    _reset_peak_rss()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = _target_loss(model, batch, False)
    forward = {"rss_mb": _rss_mb(), "peak_mb": _peak_rss_mb()}
    _reset_peak_rss()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    backward = {"rss_mb": _rss_mb(), "peak_mb": _peak_rss_mb()}
    step_cpu_s = time.process_time() - cpu_start
    mb = 2**20
    out = {
        "model": args.model,
        "data": source,
        "method": args.method,
        "gradient_checkpointing": args.gc,
        "lora_dropout": args.lora_dropout if args.method == "lora" else None,
        "malloc": args.malloc,
        "fixed_threshold_applied": applied,
        "batch_shape": list(batch["input_ids"].shape),
        "target_tokens": int((batch["labels"] != -100).sum()),
        "params_mb": round(sum(p.numel() * p.element_size() for p in model.parameters()) / mb),
        "trainable_mb": round(sum(p.numel() * p.element_size() for p in trainable) / mb, 1),
        "saved_for_backward_mb": round(sum(by_shape.values()) / mb, 2),
        "saved_by_shape_mb": {k: [round(v / mb, 2), count[k]] for k, v in by_shape.most_common(12)},
        "rss_after_load_mb": round(rss_loaded),
        "forward": {k: round(v) for k, v in forward.items()},
        "backward_and_step": {k: round(v) for k, v in backward.items()},
        "step_cpu_s": round(step_cpu_s, 2),
        "peak_mb": round(max(forward["peak_mb"], backward["peak_mb"])),
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
