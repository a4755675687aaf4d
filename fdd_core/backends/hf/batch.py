"""Batch state of one generation bucket: the causal LM's (KV cache, mask, positions) and
the encoder-decoder's (encoder output once, decoder cache); prefill, repeat, select, step."""

from __future__ import annotations

from typing import Any

from fdd_core.backends.hf.cascade import _active_prefix, _Prefix
from fdd_core.backends.hf.kv_cache import _roomy_cache
from fdd_core.backends.hf.loading import _torch


class _CausalState:
    """A batch of a causal LM: KV cache, attention mask, next positions.

    Row layout: [shared prefix][left padding][the row's own tokens], so every row ends in
    the same column; padding is masked out and position ids skip it. With a cascade prefix
    the cache and mask hold only the part after the prefix.
    """

    def __init__(
        self,
        model: Any,
        rows: list[list[int]],
        pad_id: int,
        device: str,
        room: int,
        prefix: _Prefix | None = None,
    ) -> None:
        torch = _torch()

        self.model = model
        self.prefix = prefix
        p = prefix.length if prefix else 0
        kept = 0 if prefix is None or prefix.cascade else p  # prefix columns in mask/cache
        own = [r[p:] for r in rows]
        width = max(len(r) for r in own)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), kept + width), dtype=torch.long)
        mask[:, :kept] = 1
        for i, r in enumerate(own):
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, kept + width - len(r) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        pos = p + (mask[:, kept:].cumsum(-1) - 1).clamp(min=0)
        cache = _roomy_cache(model, room)
        if prefix is not None and not prefix.cascade:
            for layer, (k, v) in zip(cache.layers, prefix.layers):
                layer.seed(k, v, len(rows), width)
        with _active_prefix(prefix):
            out = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=pos,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,  # the prefill needs only the last position's logits
            )
        self.cache = out.cache
        self.mask = mask
        self.next_pos = pos[:, -1] + 1
        self.logits = out.logits[:, -1, :]

    def repeat(self, n: int) -> None:
        self.cache.batch_repeat_interleave(n)
        self.mask = self.mask.repeat_interleave(n, dim=0)
        self.next_pos = self.next_pos.repeat_interleave(n, dim=0)
        self.logits = self.logits.repeat_interleave(n, dim=0)

    def select(self, idx) -> None:
        self.cache.batch_select_indices(idx)
        self.mask = self.mask[idx]
        self.next_pos = self.next_pos[idx]

    def step(self, tokens) -> Any:
        torch = _torch()
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        with _active_prefix(self.prefix):
            out = self.model(
                input_ids=tokens[:, None],
                attention_mask=self.mask,
                position_ids=self.next_pos[:, None],
                cache=self.cache,
                use_cache=True,
            )
        self.next_pos = self.next_pos + 1
        return out.logits[:, -1, :]


class _Seq2SeqState:
    """An encoder-decoder batch: encoder output computed once, decoder KV cache."""

    def __init__(
        self,
        model: Any,
        rows: list[list[int]],
        pad_id: int,
        device: str,
        room: int,
        prefix: None = None,  # an encoder reads the whole prompt at once: nothing to share
    ) -> None:
        torch = _torch()
        from transformers import DynamicCache, EncoderDecoderCache

        self.model = model
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        ids, mask = ids.to(device), mask.to(device)
        self.enc_mask = mask
        self.enc = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        start = model.config.decoder_start_token_id
        if start is None:
            start = pad_id
        # Cross-attention keys are written once; the decoder's own cache grows every step.
        self.cache = EncoderDecoderCache(
            _roomy_cache(model, room), DynamicCache(config=model.config)
        )
        first = torch.full((len(rows),), start, dtype=torch.long, device=device)
        self.logits = self.step(first)

    def repeat(self, n: int) -> None:
        self.cache.batch_repeat_interleave(n)
        self.enc = self.enc.repeat_interleave(n, dim=0)
        self.enc_mask = self.enc_mask.repeat_interleave(n, dim=0)
        self.logits = self.logits.repeat_interleave(n, dim=0)

    def select(self, idx) -> None:
        self.cache.batch_select_indices(idx)
        self.enc = self.enc[idx]
        self.enc_mask = self.enc_mask[idx]

    def step(self, tokens) -> Any:
        from transformers.modeling_outputs import BaseModelOutput

        out = self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=self.enc),
            attention_mask=self.enc_mask,
            decoder_input_ids=tokens[:, None],
            cache=self.cache,
            use_cache=True,
        )
        return out.logits[:, -1, :]
