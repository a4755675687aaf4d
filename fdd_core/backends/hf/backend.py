"""`HFBackend`: the in-process transformers backend (see the package docstring for how
generation runs and how seeding works)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fdd_core import deadline
from fdd_core.backends.base import (
    BackendBase,
    Completion,
    Prompt,
    SamplingParams,
    check_prompts,
    derive_seed,
)
from fdd_core.backends.hf.batch import _CausalState, _Seq2SeqState
from fdd_core.backends.hf.cascade import _Prefix, _use_prefix_attention, shared_prefix_length
from fdd_core.backends.hf.loading import _torch, load_model
from fdd_core.backends.hf.sampling import pick_tokens, row_keys
from fdd_core.backends.hf.stops import _StopChecker, cut_at_stop
from fdd_core.progress import Progress


class HFBackend(BackendBase):
    """Generate with a transformers model in this process (see the module docstring)."""

    name = "hf"
    # Share a common token prefix across the prompts of a call when it is at least this long.
    min_shared_prefix = 32

    def __init__(
        self,
        model: str,
        *,
        adapter: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 64,
        cache_dir: str | None = None,
        progress: bool | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.model_name = model
        self.adapter = adapter
        self.batch_size = batch_size
        self.progress = progress
        self.model, self.tokenizer, self.model_id = load_model(
            model, adapter=adapter, device=device, dtype=dtype, cache_dir=cache_dir
        )
        self.device = str(self.model.device)
        self.is_encoder_decoder = bool(self.model.config.is_encoder_decoder)
        self._lock = threading.Lock()  # one generate at a time per loaded model
        self._closed = False
        self._eos = self._eos_ids()
        self._cascade = not self.is_encoder_decoder and _use_prefix_attention(self.model)
        self._ctx = (
            None
            if self.is_encoder_decoder
            else getattr(self.model.config, "max_position_embeddings", None)
        )

    def with_batch_size(self, batch_size: int) -> HFBackend:
        """A view of this backend sharing its loaded weights, with another batch size."""
        if batch_size == self.batch_size:
            return self
        clone = object.__new__(HFBackend)
        clone.__dict__.update(self.__dict__)
        clone.batch_size = batch_size
        return clone

    @property
    def closed(self) -> bool:
        return self._closed

    def describe(self) -> dict[str, Any]:
        """Settings worth saving next to results."""
        return {
            "backend": self.name,
            "model": self.model_id,
            "device": str(self.device),
            "batch_size": self.batch_size,
        }

    def _eos_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        for value in (
            getattr(self.model.generation_config, "eos_token_id", None),
            self.tokenizer.eos_token_id,
        ):
            if isinstance(value, int):
                ids.add(value)
            elif value:
                ids.update(int(v) for v in value)
        return frozenset(ids)

    # -- prompts ---------------------------------------------------------------------------

    def render(self, prompt: Prompt) -> tuple[str, bool]:
        """(text, add_special_tokens): chat messages through the chat template, text as is."""
        if isinstance(prompt, str):
            return prompt, True
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                prompt, tokenize=False, add_generation_prompt=True
            )
            return text, False  # the template already holds any BOS it wants
        return "\n\n".join(m["content"] for m in prompt), True

    def encode(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """Token ids per prompt, tokenized in two batched calls (with/without special tokens)."""
        check_prompts(prompts)
        rendered = [self.render(p) for p in prompts]
        out: list[list[int]] = [[] for _ in prompts]
        for special in (True, False):
            idx = [i for i, (_, s) in enumerate(rendered) if s is special]
            if idx:
                enc = self.tokenizer([rendered[i][0] for i in idx], add_special_tokens=special)[
                    "input_ids"
                ]
                for i, ids in zip(idx, enc):
                    out[i] = list(ids)
        for i, ids in enumerate(out):
            if not ids:
                raise ValueError(f"prompt {i} is empty after tokenization; give it some text")
        return out

    # -- generation ------------------------------------------------------------------------

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        """`params.n` completions per prompt, in prompt order (see the module docstring)."""
        if self._closed:
            raise RuntimeError(f"the hf backend for {self.model_id} is closed")
        if not prompts:
            return []
        torch = _torch()
        with self._lock, torch.inference_mode():
            encoded = self.encode(prompts)
            seeds = self._row_seeds(prompts, params)
            stopper = _StopChecker(self.tokenizer, params.stop) if params.stop else None
            prefix = None
            shared = 0 if self.is_encoder_decoder else shared_prefix_length(encoded)
            if shared >= self.min_shared_prefix:
                prefix = _Prefix.build(self.model, encoded[0][:shared], self.device, self._cascade)
            order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
            results: list[list[Completion] | None] = [None] * len(prompts)
            desc = f"hf {Path(self.model_name).name or self.model_name}"
            per_bucket = self.prompts_per_bucket(params.n)
            with Progress(len(prompts) * params.n, desc, unit="seq", enabled=self.progress) as bar:
                try:
                    for start in range(0, len(order), per_bucket):
                        bucket = order[start : start + per_bucket]
                        outs = self._generate_bucket(
                            [encoded[i] for i in bucket],
                            [seeds[i] for i in bucket],
                            params,
                            stopper,
                            bar,
                            first_index=bucket,
                            prefix=prefix,
                        )
                        for i, completions in zip(bucket, outs):
                            results[i] = completions
                except deadline.WorkTimeout as exc:
                    exc.partial = list(results)  # finished buckets: the request cache keeps them
                    raise
        return results  # type: ignore[return-value]

    def prompts_per_bucket(self, n: int) -> int:
        """Prompts per forward batch: `batch_size` sequences over `n` samples each (>= 1)."""
        return max(1, self.batch_size // n)

    def _row_seeds(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[int]]:
        if params.greedy:
            return [[0] * params.n for _ in prompts]
        if params.seed is None:
            torch = _torch()
            drawn = torch.randint(0, 2**31 - 1, (len(prompts), params.n)).tolist()
            return [list(map(int, row)) for row in drawn]
        return [[derive_seed(params.seed, p, j) for j in range(params.n)] for p in prompts]

    def _limits(
        self, rows: list[list[int]], params: SamplingParams, first_index: list[int]
    ) -> list[int]:
        if self._ctx is None:
            return [params.max_tokens] * len(rows)
        limits = []
        for i, r in zip(first_index, rows):
            room = self._ctx - len(r)
            if room < 1:
                raise ValueError(
                    f"prompt {i} has {len(r)} tokens, which fills the model's context window of "
                    f"{self._ctx} tokens: shorten it"
                )
            limits.append(min(params.max_tokens, room))
        return limits

    def _generate_bucket(
        self,
        rows: list[list[int]],
        seeds: list[list[int]],
        params: SamplingParams,
        stopper: _StopChecker | None,
        bar: Progress,
        first_index: list[int],
        prefix: _Prefix | None = None,
    ) -> list[list[Completion]]:
        torch = _torch()
        n = params.n
        limits = [lim for lim in self._limits(rows, params, first_index) for _ in range(n)]
        state_cls = _Seq2SeqState if self.is_encoder_decoder else _CausalState
        state = state_cls(
            self.model, rows, self.tokenizer.pad_token_id, self.device, max(limits), prefix=prefix
        )
        if n > 1:
            state.repeat(n)
        logits = state.logits
        total = len(rows) * n
        row_seeds = torch.tensor(
            [s for row in seeds for s in row], dtype=torch.long, device=logits.device
        )
        tokens: list[list[int]] = [[] for _ in range(total)]
        finish: list[str] = ["length"] * total
        batch = list(range(total))  # the global row in each batch row
        live = [True] * total  # per batch row: still generating
        n_live = total
        step = 0  # every live row has generated `step` tokens so far
        limit = deadline.current()  # the shard's time limit, checked once per step
        while True:
            if limit is not None and limit.remaining() <= 0:
                # In-process decoding that ran out of time would be as slow on a retry.
                raise deadline.expired_error(
                    f"while {self.model_id} decoded step {step} of at most {max(limits)}",
                    retryable=False,
                )
            keys = None
            if not params.greedy:
                keys = row_keys(row_seeds, torch.full_like(row_seeds, step))
            picked = pick_tokens(logits, params, keys)
            step += 1
            finished = 0
            for k, t in enumerate(picked.tolist()):
                if not live[k]:
                    continue
                r = batch[k]
                tokens[r].append(t)
                if t in self._eos or (
                    stopper and stopper.could_complete(t) and stopper.found(tokens[r])
                ):
                    finish[r] = "stop"
                elif len(tokens[r]) < limits[r]:
                    continue
                live[k] = False
                finished += 1
            bar.update(finished, tokens=n_live)
            n_live -= finished
            if n_live == 0:
                break
            if self._worth_compacting(len(batch) - n_live, len(batch)):
                keep = [k for k in range(len(batch)) if live[k]]
                idx = torch.tensor(keep, device=picked.device)
                state.select(idx)
                picked, row_seeds = picked[idx], row_seeds[idx]
                batch = [batch[k] for k in keep]
                live = [True] * len(batch)
            logits = state.step(picked)
        return [
            [
                self._completion(tokens[b * n + j], finish[b * n + j], len(rows[b]), params)
                for j in range(n)
            ]
            for b in range(len(rows))
        ]

    @staticmethod
    def _worth_compacting(dead: int, rows: int) -> bool:
        """Cut finished rows out of the batch once they are an eighth of it.

        A cut copies every layer's KV cache (about as long as several decoding steps), so
        cutting after every single finished row costs more than computing a few dead rows.
        """
        return dead > 0 and dead * 8 >= rows

    def _completion(
        self, toks: list[int], finish: str, prompt_tokens: int, params: SamplingParams
    ) -> Completion:
        text = self.tokenizer.decode(toks, skip_special_tokens=True)
        if params.stop:
            text, hit = cut_at_stop(text, params.stop)
            if hit:
                finish = "stop"
        return Completion(
            text=text,
            finish_reason=finish,  # type: ignore[arg-type]
            prompt_tokens=prompt_tokens,
            completion_tokens=len(toks),
        )

    def close(self) -> None:
        """Drop the weights (and free GPU memory); generate() fails afterwards."""
        if self._closed:
            return
        self._closed = True
        device = self.device
        self.model = None
        self.tokenizer = None
        if device.startswith("cuda"):
            _torch().cuda.empty_cache()

    def __repr__(self) -> str:
        return (
            f"HFBackend(model_id={self.model_id!r}, device={self.device!r}, "
            f"batch_size={self.batch_size})"
        )
