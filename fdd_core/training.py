"""Supervised fine-tuning of a student on Program-of-Thought examples.

The student learns `student_prompt(question) -> program + EOS`, with the loss on the program
tokens only (the prompt and the padding carry label -100). Causal LMs (SmolLM2, Qwen2.5,
Llama) see `prompt + program` as one sequence; encoder-decoder models (T5, CodeT5+, FlanT5)
get the prompt as encoder input and the program as labels. Full fine-tuning or LoRA (peft).
Every run starts from the base checkpoint (`resolve_model(base_model)`), never from an
earlier round's student: FDD retrains from scratch each round against forgetting.

Why a compact loop rather than `transformers.Trainer`: the loop is ~150 lines, makes the
data order a pure function of the seed (bit-identical weights twice on CPU, tested), pads
each batch only to its own longest row after grouping by length, normalises the loss per
target token across gradient-accumulation and data-parallel ranks, and has no logging or
checkpoint side effects to switch off. It runs under `accelerate.Accelerator`, so the same
code trains on one CPU, one GPU, or many GPUs with `accelerate launch` / `torchrun`
(DDP; each rank takes its share of every optimizer step's micro-batches). bf16 autocast and
gradient checkpointing switch on by themselves on CUDA (`TrainingConfig.bf16`,
`gradient_checkpointing` = "auto").

The output folder is written atomically: the model (full) or adapter (LoRA), the tokenizer
and `meta.json` (what made it) go to a hidden temporary folder beside `out_dir`, which is
renamed into place at the end. A crash leaves no `out_dir` that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from fdd_core import __version__ as FDD_VERSION
from fdd_core.config import ModelConfig, TrainingConfig
from fdd_core.io import atomic_write_json
from fdd_core.models import MODEL_LOAD_LOCK, peft_quietly, resolve_model
from fdd_core.progress import progress_enabled
from fdd_core.prompts import STUDENT_PROMPT_VERSION, student_prompt
from fdd_core.schemas import Example, ModelRef

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
MAX_GRAD_NORM = 1.0  # gradient clipping; not worth a config field
MEGA_BATCH_MULT = 50  # length grouping sorts within windows of 50 batches (as transformers)
META_FILE = "meta.json"
Padding = Literal["longest", "max_length"]


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Encoded:
    """One tokenized example. Causal: `labels` aligns with `input_ids` (-100 on the prompt).
    Encoder-decoder: `input_ids` is the prompt, `labels` the program ids."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    seq2seq: bool = False

    @property
    def length(self) -> int:
        """Non-padding tokens the model processes (what grouping and tokens/s count)."""
        return len(self.input_ids) + (len(self.labels) if self.seq2seq else 0)

    @property
    def n_targets(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def encode_examples(
    examples: Sequence[Example], tokenizer: Any, *, seq2seq: bool, max_seq_len: int
) -> tuple[list[Encoded], int]:
    """Tokenize prompt and program separately (as generation sees the prompt alone).

    Returns the encodings and how many were truncated. Truncation keeps the prompt and cuts
    the program's tail; a prompt that leaves no room keeps its last `max_seq_len // 2` tokens.
    """
    prompts = [student_prompt(e.question) for e in examples]
    programs = [e.program.strip() for e in examples]
    prompt_ids = tokenizer(prompts)["input_ids"]
    program_ids = tokenizer(programs, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    out: list[Encoded] = []
    truncated = 0
    for p, t in zip(prompt_ids, program_ids):
        t = list(t) + [eos]
        if seq2seq:
            cut = len(p) > max_seq_len or len(t) > max_seq_len
            truncated += cut
            out.append(Encoded(tuple(p[-max_seq_len:]), tuple(t[:max_seq_len]), True))
            continue
        if len(p) + len(t) > max_seq_len:
            truncated += 1
            if len(p) >= max_seq_len:
                p = p[-(max_seq_len // 2) :]
            t = t[: max_seq_len - len(p)]
        out.append(Encoded(tuple(p) + tuple(t), (IGNORE_INDEX,) * len(p) + tuple(t)))
    return out, truncated


def plan_batches(
    lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int, group_by_length: bool
) -> list[list[int]]:
    """The epoch's micro-batches (lists of example indices), a pure function of the seed.

    Grouped: shuffle, cut into mega-batches of `MEGA_BATCH_MULT` batches, sort each by length
    (longest first), split into batches, shuffle the batch order; the batch with the most
    tokens goes first so an out-of-memory shows at step 1, not hours in.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    mega = batch_size * MEGA_BATCH_MULT
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    costs = [max(lengths[i] for i in b) * len(b) for b in batches]
    first = costs.index(max(costs))
    batches.insert(0, batches.pop(first))
    return batches


def collate(batch: Sequence[Encoded], pad_id: int, *, pad_to: int | None = None) -> dict:
    """Right-pad a batch to its longest row (or to `pad_to`, the padding baseline)."""
    import torch

    seq2seq = batch[0].seq2seq
    width = max(len(e.input_ids) for e in batch)
    if pad_to is not None:
        width = max(width, pad_to)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    lab_width = max(len(e.labels) for e in batch) if seq2seq else width
    if seq2seq and pad_to is not None:
        lab_width = max(lab_width, pad_to)
    labels = torch.full((len(batch), lab_width), IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(batch):
        ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[row, : len(e.input_ids)] = 1
        labels[row, : len(e.labels)] = torch.tensor(e.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# --------------------------------------------------------------------------- model


def training_config_hash(cfg: TrainingConfig) -> str:
    """Stable 16-hex hash of every training setting (cache keys, meta.json)."""
    blob = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _is_seq2seq(path: str) -> bool:
    from transformers import AutoConfig

    return bool(getattr(AutoConfig.from_pretrained(path), "is_encoder_decoder", False))


def _load_base(path: str) -> tuple[Any, Any, bool]:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{path}: the tokenizer has no EOS token; the student could not stop")
    seq2seq = _is_seq2seq(path)
    cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    # fp32 master weights; bf16 comes from autocast on CUDA (mixed precision).
    with MODEL_LOAD_LOCK:
        model = cls.from_pretrained(path, dtype="float32")
    return model, tokenizer, seq2seq


def _apply_lora(model: Any, cfg: TrainingConfig, seq2seq: bool) -> Any:
    from peft import LoraConfig, get_peft_model

    target = cfg.lora_target_modules
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=target if target == "all-linear" else list(target),
        task_type="SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM",
    )
    with peft_quietly():  # peft reads a deprecated transformers property (not our call)
        return get_peft_model(model, lora)


def _flag(value: str, auto: bool) -> bool:
    return auto if value == "auto" else value == "on"


def _make_accelerator(device: str) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("training device 'cuda' was asked for but no CUDA GPU is visible")
    try:
        return Accelerator(cpu=device == "cpu")
    except ValueError:
        # accelerate keeps one process-wide state; a single-process caller (tests, a
        # notebook) that switches between cpu and cuda would be refused. Nothing is
        # distributed then, so resetting it is safe.
        if PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(cpu=device == "cpu")


def _target_loss(model: Any, batch: dict, seq2seq: bool) -> Any:
    """Summed cross-entropy over the target tokens of a batch (fp32)."""
    import torch
    import torch.nn.functional as F

    if seq2seq:
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        inner = getattr(inner, "module", inner)
        prepare = getattr(inner, "prepare_decoder_input_ids_from_labels", None)
        if prepare is not None:
            out = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                decoder_input_ids=prepare(labels=batch["labels"]),
            )
        else:
            out = model(**batch)
        logits, targets = out.logits, batch["labels"]
    else:
        # Position p predicts token p + 1: keep only positions whose next token is a target.
        # Models that take a boolean `logits_to_keep` then project just those hidden states
        # onto the vocabulary (prompt and padding never reach the big LM head).
        labels = batch["labels"]
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        logits = None
        if _takes_logits_to_keep(model):
            try:
                logits = model(**inputs, logits_to_keep=keep).logits
            except (IndexError, TypeError):  # a model that only takes an int there
                logits = None
            if logits is not None and (logits.dim() != 2 or logits.size(0) != int(keep.sum())):
                logits = None  # not the flattened kept positions: compute them all
        if logits is None:
            logits = model(**inputs).logits[keep]
        targets = labels[:, 1:][keep[:, :-1]]
    return F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def _takes_logits_to_keep(model: Any) -> bool:
    """Whether the innermost transformers model accepts `logits_to_keep` (Llama, Qwen2...)."""
    inner = getattr(model, "module", model)  # DDP
    if hasattr(inner, "get_base_model"):  # peft
        inner = inner.get_base_model()
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


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


# --------------------------------------------------------------------------- training


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
    (a baseline for benchmarks). `on_step` is called after every optimizer step on the main
    process (progress hooks, tests); an exception from it aborts the run and nothing is
    saved. Seeds the global python/numpy/torch generators with `cfg.seed`. Returns the
    `ModelRef` of the saved model (full) or adapter (LoRA).
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
    loop_start, loop_cpu = time.perf_counter(), time.process_time()
    log.info(
        "training %s (%s, %s) on %d examples: %d steps, batch %d x %d accum x %d processes, "
        "device %s, bf16 %s, gradient checkpointing %s",
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
                    tensors = {
                        n: t.to(accelerator.device)
                        for n, t in collate(batch, tokenizer.pad_token_id, pad_to=pad_to).items()
                    }
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
                padded_tokens += sum(_padded_size(b, pad_to) for b in group)
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
        "padding": padding,
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


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to the peak, then linear decay to zero at `total`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


def _padded_size(batch: Sequence[Encoded], pad_to: int | None) -> int:
    width = max(len(e.input_ids) for e in batch)
    if pad_to is not None:
        width = max(width, pad_to)
    size = width * len(batch)
    if batch[0].seq2seq:
        lab = max(len(e.labels) for e in batch)
        size += max(lab, pad_to or 0) * len(batch)
    return size


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


def _save_atomically(model: Any, tokenizer: Any, meta: dict, out_dir: Path, gc: bool) -> None:
    """Write into a hidden temp folder beside `out_dir`, fsync, then rename into place."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        if gc:
            model.config.use_cache = True  # the saved model generates with a KV cache
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / META_FILE, meta)  # last: its presence means "complete"
        _fsync_tree(tmp)
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


# --------------------------------------------------------------------------- loading


def read_model_ref(path: str | Path) -> ModelRef:
    """The `ModelRef` of a trained student folder (from its meta.json, or a bare adapter)."""
    folder = Path(path)
    meta_path = folder / META_FILE
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        return ModelRef(
            path=str(folder),
            base_model=meta["base_model"],
            dataset_version=meta.get("dataset_version"),
            adapter=bool(meta.get("adapter")),
        )
    adapter_cfg = folder / "adapter_config.json"
    if adapter_cfg.is_file():
        base = json.loads(adapter_cfg.read_text(encoding="utf-8")).get("base_model_name_or_path")
        if not base:
            raise ValueError(f"{adapter_cfg}: no base_model_name_or_path; cannot tell the base")
        return ModelRef(path=str(folder), base_model=base, adapter=True)
    if (folder / "config.json").is_file():
        return ModelRef(path=str(folder), base_model=str(folder), adapter=False)
    raise FileNotFoundError(
        f"{folder} is not a trained student (expected {META_FILE}, adapter_config.json or "
        "config.json inside)"
    )


def student_model_config(ref: ModelRef, base: ModelConfig) -> ModelConfig:
    """The backend config that serves `ref`: base + adapter for LoRA, the folder for full."""
    if ref.adapter:
        return base.model_copy(update={"model": ref.base_model, "adapter": ref.path})
    return base.model_copy(update={"model": ref.path, "adapter": None})


def load_student(
    ref_or_path: ModelRef | str | Path, *, device: str = "cpu", cache_dir: str | None = None
) -> tuple[Any, Any]:
    """(model, tokenizer) of a trained student, in eval mode. LoRA: base + adapter, unmerged."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    ref = ref_or_path if isinstance(ref_or_path, ModelRef) else read_model_ref(ref_or_path)
    base_path = resolve_model(ref.base_model, cache_dir) if ref.adapter else ref.path
    cls = AutoModelForSeq2SeqLM if _is_seq2seq(base_path) else AutoModelForCausalLM
    with MODEL_LOAD_LOCK:
        model = cls.from_pretrained(base_path, dtype="float32")
        if ref.adapter:
            from peft import PeftModel

            with peft_quietly():
                model = PeftModel.from_pretrained(model, ref.path)
    tokenizer = AutoTokenizer.from_pretrained(ref.path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer
