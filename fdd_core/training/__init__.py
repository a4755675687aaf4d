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

Layout: `batching` (tokenized examples, the batch plan, padding), `modeling` (base model,
LoRA, Accelerator, loss), `loop` (`train_student`), `student` (the output folder: saving,
`read_model_ref`, `student_model_config`, `load_student`). Import from `fdd_core.training`.
"""

from __future__ import annotations

from fdd_core.training.batching import (
    IGNORE_INDEX,
    MEGA_BATCH_MULT,
    Encoded,
    collate,
    encode_examples,
    plan_batches,
)
from fdd_core.training.loop import (
    MAX_GRAD_NORM,
    Padding,
    TrainState,
    train_student,
    training_config_hash,
)
from fdd_core.training.student import META_FILE, load_student, read_model_ref, student_model_config

__all__ = [
    "Encoded",
    "IGNORE_INDEX",
    "MAX_GRAD_NORM",
    "MEGA_BATCH_MULT",
    "META_FILE",
    "Padding",
    "TrainState",
    "collate",
    "encode_examples",
    "load_student",
    "plan_batches",
    "read_model_ref",
    "student_model_config",
    "train_student",
    "training_config_hash",
]
