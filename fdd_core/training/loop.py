"""The training loop: `train_student` (see the package docstring for why a compact loop)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from fdd_core import __version__ as FDD_VERSION
from fdd_core.config import TrainingConfig
from fdd_core.models import resolve_model
from fdd_core.progress import progress_enabled
from fdd_core.prompts import STUDENT_PROMPT_VERSION
from fdd_core.schemas import Example, ModelRef
from fdd_core.training.batching import (
    _padded_size,
    collate,
    encode_examples,
    pack,
    plan_batches,
)
from fdd_core.training.memory import return_freed_memory
from fdd_core.training.modeling import (
    _apply_lora,
    _flag,
    _load_base,
    _make_accelerator,
    _packing_keeps_examples_apart,
    _segment_attention,
    _target_loss,
)
from fdd_core.training.student import _save_atomically

# The package's name, as before the split: what docs/training.md tells users to filter on.
log = logging.getLogger("fdd_core.training")

MAX_GRAD_NORM = 1.0  # gradient clipping; not worth a config field
Padding = Literal["longest", "max_length"]


# Settings of how a student is trained, not of what it learns: the same student either way.
LAUNCH_FIELDS = frozenset({"isolation", "processes", "timeout_s"})


def training_config_hash(cfg: TrainingConfig) -> str:
    """Stable 16-hex hash of every training setting but LAUNCH_FIELDS (meta.json)."""
    blob = json.dumps(cfg.model_dump(mode="json", exclude=set(LAUNCH_FIELDS)), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class TrainState:
    """What `on_step` sees after each optimizer step (main process only)."""

    step: int
    total_steps: int
    epoch: float
    loss: float
    learning_rate: float
    tokens_seen: int
    model: Any


def train_student(
    examples: Sequence[Example],
    base_model: str,
    cfg: TrainingConfig,
    out_dir: str | Path,
    *,
    dataset_version: str | None = None,
    device: str = "auto",
    cache_dir: str | None = None,
    progress: bool | None = None,
    padding: Padding = "longest",
    on_step: Callable[[TrainState], None] | None = None,
) -> ModelRef:
    """Fine-tune a fresh copy of `base_model` on `examples`; write it to `out_dir`.

    `device` "auto" takes CUDA when visible (under `accelerate launch` / `torchrun`, this
    rank's GPU). `padding="max_length"` pads every batch to the dataset's longest example
    (a baseline for benchmarks; it turns `cfg.padding_free` "auto" off, and refuses "on").
    With padding-free batching (`cfg.padding_free`, causal students) each micro-batch is
    one row without padding: the same examples per micro-batch and step as padded.
    `on_step` is called after every optimizer step on the main process (progress hooks,
    tests); an exception from it aborts the run and nothing is saved. Seeds the global
    python/numpy/torch generators with `cfg.seed`. Returns the `ModelRef` of the saved
    model (full) or adapter (LoRA).
    """
    if not examples:
        raise ValueError("train_student needs at least one example, got none")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    import torch
    from accelerate.utils import set_seed

    started = time.perf_counter()
    out_dir = Path(out_dir)
    base_path = resolve_model(base_model, cache_dir)
    accelerator = _make_accelerator(device)
    on_cuda = accelerator.device.type == "cuda"
    if accelerator.device.type == "cpu":
        return_freed_memory()  # activations' memory back to the system (training/memory.py)
    set_seed(cfg.seed)  # python, numpy, torch: LoRA init and dropout
    model, tokenizer, seq2seq = _load_base(base_path)
    use_bf16 = _flag(cfg.bf16, on_cuda and torch.cuda.is_bf16_supported())
    use_gc = _flag(cfg.gradient_checkpointing, on_cuda)
    if use_gc:
        model.config.use_cache = False
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    if cfg.method == "lora":
        model = _apply_lora(model, cfg, seq2seq)
    packed = _padding_free(cfg.padding_free, seq2seq, padding, model)

    encoded, n_truncated = encode_examples(
        examples, tokenizer, seq2seq=seq2seq, max_seq_len=cfg.max_seq_len
    )
    if n_truncated:
        log.warning(
            "%d of %d examples were longer than max_seq_len=%d and were truncated",
            n_truncated,
            len(encoded),
            cfg.max_seq_len,
        )
    lengths = [e.length for e in encoded]
    pad_to = max(len(e.input_ids) for e in encoded) if padding == "max_length" else None
    if seq2seq and pad_to is not None:
        pad_to = max(pad_to, max(len(e.labels) for e in encoded))

    world = accelerator.num_processes
    per_step = cfg.grad_accum * world
    n_batches = math.ceil(len(encoded) / cfg.batch_size)
    steps_per_epoch = math.ceil(math.ceil(n_batches / world) * world / per_step)
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    warmup = math.ceil(cfg.warmup_ratio * total_steps)

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]  # no weight decay on biases and norms
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.learning_rate,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, warmup, total_steps)
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()

    show = progress_enabled(progress)
    bar = _progress_bar(total_steps, show and accelerator.is_main_process)
    log_every = max(1, min(10, total_steps // 10))
    autocast = (
        torch.autocast(accelerator.device.type, dtype=torch.bfloat16)
        if use_bf16
        else contextlib.nullcontext()
    )
    history: list[float] = []
    tokens_seen = padded_tokens = target_tokens = 0
    tracker = None
    if accelerator.is_main_process and cfg.report_to != "none":
        from fdd_core.trackers import start_tracker

        tracker = start_tracker(cfg.report_to, out_dir, cfg.model_dump(mode="json"))
    step, epoch, batches_done = 0, 0, 0
    attention = contextlib.ExitStack()  # packed: attention per example, SDPA back at the end
    per_example = packed and attention.enter_context(_segment_attention(model))
    loop_start, loop_cpu = time.perf_counter(), time.process_time()
    log.info(
        "training %s (%s, %s) on %d examples: %d steps, batch %d x %d accum x %d processes, "
        "device %s, bf16 %s, gradient checkpointing %s, padding-free %s%s",
        base_model,
        "seq2seq" if seq2seq else "causal",
        cfg.method,
        len(encoded),
        total_steps,
        cfg.batch_size,
        cfg.grad_accum,
        world,
        accelerator.device,
        use_bf16,
        use_gc,
        packed,
        " (attention per example)" if per_example else "",
    )
    try:
        while step < total_steps:
            plan = plan_batches(
                lengths,
                cfg.batch_size,
                seed=cfg.seed,
                epoch=epoch,
                group_by_length=cfg.group_by_length,
            )
            # Every rank must get the same number of batches: repeat a few to fill up.
            plan += [plan[i % len(plan)] for i in range((-len(plan)) % world)]
            for g in range(0, len(plan), per_step):
                if step >= total_steps:
                    break
                group = [[encoded[i] for i in b] for b in plan[g : g + per_step]]
                step_targets = sum(e.n_targets for b in group for e in b)
                local = group[accelerator.process_index :: world]
                summed = torch.zeros((), device=accelerator.device)
                for k, batch in enumerate(local):
                    cpu = (
                        pack(batch)
                        if packed
                        else collate(batch, tokenizer.pad_token_id, pad_to=pad_to)
                    )
                    tensors = {n: t.to(accelerator.device) for n, t in cpu.items()}
                    sync = k == len(local) - 1
                    with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                        with autocast:
                            ce = _target_loss(model, tensors, seq2seq)
                        # DDP averages gradients over ranks: scale so the result is the
                        # mean over every target token of the step, whatever the batch mix.
                        accelerator.backward(ce * world / step_targets)
                    summed += ce.detach()
                accelerator.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                if world > 1:
                    summed = accelerator.reduce(summed, reduction="sum")
                loss = float(summed) / step_targets
                history.append(loss)
                step += 1
                batches_done += len(group)
                tokens_seen += sum(e.length for b in group for e in b)
                padded_tokens += sum(_padded_size(b, pad_to, packed=packed) for b in group)
                target_tokens += step_targets
                lr = scheduler.get_last_lr()[0]
                _report(bar, step, total_steps, loss, lr, log_every, tokens_seen, loop_start)
                if tracker is not None:
                    tracker.log({"train/loss": loss, "train/lr": lr}, step=step)
                if on_step is not None and accelerator.is_main_process:
                    on_step(
                        TrainState(
                            step,
                            total_steps,
                            batches_done / len(plan),
                            loss,
                            lr,
                            tokens_seen,
                            accelerator.unwrap_model(model),
                        )
                    )
            epoch += 1
    finally:
        attention.close()
        if bar is not None:
            bar.close()
        if tracker is not None:
            tracker.finish()
    train_time = time.perf_counter() - loop_start
    train_cpu = time.process_time() - loop_cpu

    meta = {
        "fdd_version": FDD_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base_model": base_model,
        "base_path": base_path,
        "architecture": "seq2seq" if seq2seq else "causal",
        "method": cfg.method,
        "adapter": cfg.method == "lora",
        "dataset_version": dataset_version,
        "prompt_version": STUDENT_PROMPT_VERSION,
        "training_config": cfg.model_dump(mode="json"),
        "training_config_hash": training_config_hash(cfg),
        "n_examples": len(encoded),
        "n_truncated": n_truncated,
        "steps": step,
        "epochs": round(batches_done / max(1, len(plan)), 4),
        "final_loss": history[-1],
        "loss_history": _summarize(history),
        "loss_per_step": [round(x, 6) for x in history],  # the run report's training curve
        "wall_time_s": round(time.perf_counter() - started, 3),
        "train_time_s": round(train_time, 3),
        "train_cpu_s": round(train_cpu, 3),  # CPU time of this process (all its threads)
        "tokens_seen": tokens_seen,
        "target_tokens": target_tokens,
        "padded_tokens": padded_tokens,
        "tokens_per_s": round(tokens_seen / train_time, 2) if train_time > 0 else None,
        "device": str(accelerator.device),
        "num_processes": world,
        "bf16": use_bf16,
        "gradient_checkpointing": use_gc,
        "padding": "packed" if packed else padding,  # packed: padding-free, one row per batch
        "versions": _library_versions(),
    }
    if accelerator.is_main_process:
        _save_atomically(accelerator.unwrap_model(model), tokenizer, meta, out_dir, use_gc)
    accelerator.wait_for_everyone()
    log.info(
        "saved the student to %s (final loss %.4f, %d steps, %.1f s)",
        out_dir,
        history[-1],
        step,
        train_time,
    )
    return ModelRef(
        path=str(out_dir),
        base_model=base_model,
        dataset_version=dataset_version,
        adapter=cfg.method == "lora",
    )


def _padding_free(setting: str, seq2seq: bool, padding: Padding, model: Any) -> bool:
    """Whether this run packs its micro-batches (TrainingConfig.padding_free)."""
    if setting == "off":
        return False
    if setting == "on" and seq2seq:
        raise ValueError(
            "padding_free 'on' is for causal students; an encoder-decoder student is always "
            "padded (use 'auto' or 'off')"
        )
    if setting == "on" and padding == "max_length":
        raise ValueError("padding='max_length' pads every batch; it contradicts padding_free 'on'")
    if seq2seq or padding == "max_length":
        return False
    if _packing_keeps_examples_apart(model):
        return True
    if setting == "on":
        raise ValueError(
            "padding_free 'on': this model's attention does not keep packed examples apart "
            "(its logits change when another example precedes it in the row); use 'off'"
        )
    log.warning(
        "padding_free 'auto': this model does not keep packed examples apart; padding instead"
    )
    return False


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to the peak, then linear decay to zero at `total`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


def _progress_bar(total: int, show: bool) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="train", unit="step", dynamic_ncols=True)


def _report(bar, step, total, loss, lr, every, tokens, since) -> None:
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
    if step % every == 0 or step == total:
        rate = tokens / max(1e-9, time.perf_counter() - since)
        log.info("step %d/%d loss %.4f lr %.2e %.0f tokens/s", step, total, loss, lr, rate)


def _summarize(history: list[float], points: int = 100) -> dict:
    """First/min/last loss and at most `points` (step, loss) pairs, evenly spaced."""
    n = len(history)
    tail = history[-max(1, n // 10) :]
    if n <= points:
        idx = list(range(n))
    else:
        idx = sorted({round(i * (n - 1) / (points - 1)) for i in range(points)})
    return {
        "first": history[0],
        "min": min(history),
        "last": history[-1],
        "mean_last_10pct": sum(tail) / len(tail),
        "points": [[i + 1, history[i]] for i in idx],
    }


def _library_versions() -> dict:
    versions = {}
    for name in ("torch", "transformers", "peft", "accelerate"):
        try:
            versions[name] = __import__(name).__version__
        except (ImportError, AttributeError):  # a missing optional library is not an error
            versions[name] = None
    return versions
