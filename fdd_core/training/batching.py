"""Training data: tokenized examples, the seeded batch plan (grouped by length), padding
or packing (padding-free: a micro-batch flattened into one row)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fdd_core.prompts import student_prompt
from fdd_core.schemas import Example

IGNORE_INDEX = -100
MEGA_BATCH_MULT = 50  # length grouping sorts within windows of 50 batches (as transformers)


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


def pack(batch: Sequence[Encoded]) -> dict:
    """Flatten a causal batch into one row without padding (padding-free batching).

    The examples follow each other in one row of shape (1, total tokens); `position_ids`
    restart at 0 with each example, and there is no `attention_mask`: transformers reads the
    restarts as packed sequences and masks attention block-diagonally, so no example sees
    another (tests/test_training_packed.py checks it). Each example's first label is -100,
    so the last token of one example never learns to predict the first token of the next.
    """
    import torch

    if batch[0].seq2seq:
        raise ValueError("packing is for causal models; encoder-decoder batches are padded")
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for e in batch:
        ids.extend(e.input_ids)
        labels.append(IGNORE_INDEX)
        labels.extend(e.labels[1:])
        positions.extend(range(len(e.input_ids)))
    return {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "position_ids": torch.tensor([positions], dtype=torch.long),
        "labels": torch.tensor([labels], dtype=torch.long),
    }


def _padded_size(batch: Sequence[Encoded], pad_to: int | None, *, packed: bool = False) -> int:
    """Positions the model computes for `batch` (padding included; packed: none)."""
    if packed:
        return sum(e.length for e in batch)
    width = max(len(e.input_ids) for e in batch)
    if pad_to is not None:
        width = max(width, pad_to)
    size = width * len(batch)
    if batch[0].seq2seq:
        lab = max(len(e.labels) for e in batch)
        size += max(lab, pad_to or 0) * len(batch)
    return size
