"""The model side of training: base model and tokenizer, LoRA, the Accelerator, the loss."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
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
        inputs = {"input_ids": batch["input_ids"]}
        if "position_ids" in batch:
            # Packed (batching.pack): no mask, and no cache, which would hide the restarts
            # of the position ids from transformers' packed-sequence detection.
            inputs.update(position_ids=batch["position_ids"], use_cache=False)
        else:
            inputs["attention_mask"] = batch["attention_mask"]
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


def _packing_keeps_examples_apart(model: Any) -> bool:
    """Whether `model` keeps packed examples apart (batching.pack), probed on two tiny ones.

    The second example's logits must be the same packed behind the first as alone; a model
    whose attention ignores the restarts of `position_ids` (no packed-sequence masking)
    fails, as does one that does not take `position_ids`.
    """
    import torch

    first, second = [3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no dropout: the two passes must be comparable
    try:
        with torch.no_grad():
            alone = model(
                input_ids=torch.tensor([second], device=device),
                position_ids=torch.arange(len(second), device=device)[None],
                use_cache=False,
            ).logits
            positions = list(range(len(first))) + list(range(len(second)))
            packed = model(
                input_ids=torch.tensor([first + second], device=device),
                position_ids=torch.tensor([positions], device=device),
                use_cache=False,
            ).logits[:, len(first) :]
    except (TypeError, ValueError, RuntimeError):  # no `position_ids`, or another failure
        return False
    finally:
        model.train(was_training)
    return bool(torch.allclose(packed.float(), alone.float(), rtol=1e-3, atol=1e-3))


# Attention for packed rows: SDPA once per example (causal) instead of once over the whole
# row with a block-diagonal mask. Same result; the T x T mask costs attention work that
# grows with the square of the row, which per example it does not.
SEGMENT_ATTENTION = "fdd_segment_sdpa"


def _segment_lengths(position_ids: Any, length: int) -> list[int] | None:
    """The packed examples' lengths when `position_ids` (1, length) is a run of aranges
    0..n-1 (what batching.pack writes); None for anything else."""
    import torch

    if position_ids is None or position_ids.dim() != 2 or position_ids.shape != (1, length):
        return None
    pos = position_ids[0]
    starts = (pos == 0).nonzero().flatten().tolist()
    if len(starts) < 2 or starts[0] != 0:
        return None
    lengths = [b - a for a, b in zip(starts, starts[1:] + [length])]
    expected = torch.cat([torch.arange(n, device=pos.device) for n in lengths])
    return lengths if torch.equal(pos, expected) else None


def _segment_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kw):
    """transformers attention function: causal SDPA per packed example, from the position
    ids the model passes down; anything else goes to transformers' own SDPA (with the
    block-diagonal mask it built). It ignores that mask: the examples' lengths say it all."""
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    q_len = query.shape[2]
    lengths = None
    # Only plain causal attention: a sliding window, attention sinks or a position bias
    # (which the mask carries) go to transformers' SDPA.
    plain = all(kw.get(k) is None for k in ("position_bias", "sliding_window", "s_aux"))
    if query.shape[0] == 1 and key.shape[2] == q_len and plain:
        lengths = _segment_lengths(kw.get("position_ids"), q_len)
    if lengths is None or not getattr(module, "is_causal", True):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kw
        )
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    out = [
        F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling, is_causal=True)
        for q, k, v in zip(query.split(lengths, 2), key.split(lengths, 2), value.split(lengths, 2))
    ]
    return torch.cat(out, 2).transpose(1, 2).contiguous(), None


@contextlib.contextmanager
def _segment_attention(model: Any) -> Iterator[bool]:
    """Run an SDPA model's attention per packed example (`_segment_sdpa`) inside the block,
    and put SDPA back after it (before anything is saved). Yields whether it switched."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    inner = getattr(model, "module", model)  # DDP
    if hasattr(inner, "get_base_model"):  # peft
        inner = inner.get_base_model()
    config = getattr(inner, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" or not hasattr(
        inner, "set_attn_implementation"
    ):
        yield False
        return
    AttentionInterface.register(SEGMENT_ATTENTION, _segment_sdpa)
    AttentionMaskInterface.register(SEGMENT_ATTENTION, sdpa_mask)  # the fallback's mask
    inner.set_attn_implementation(SEGMENT_ATTENTION)
    try:
        yield True
    finally:
        inner.set_attn_implementation("sdpa")


def _takes_logits_to_keep(model: Any) -> bool:
    """Whether the innermost transformers model accepts `logits_to_keep` (Llama, Qwen2...)."""
    inner = getattr(model, "module", model)  # DDP
    if hasattr(inner, "get_base_model"):  # peft
        inner = inner.get_base_model()
    return "logits_to_keep" in inspect.signature(inner.forward).parameters
