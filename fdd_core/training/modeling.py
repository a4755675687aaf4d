"""The model side of training: base model and tokenizer, LoRA, the Accelerator, the loss."""

from __future__ import annotations

import inspect
from typing import Any

from fdd_core.config import TrainingConfig
from fdd_core.models import MODEL_LOAD_LOCK, peft_quietly
from fdd_core.training.batching import IGNORE_INDEX


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
