"""The in-process transformers backend: batched generation on CPU or GPU.

Loads the embedded model (``smollm2-135m-instruct``), a local checkpoint, a hub id (needs a
network), or a base model plus a LoRA adapter folder (merged into the weights for speed).
Causal LMs and encoder-decoder (T5-style) models are both supported.

How generation runs, and why it does not call ``model.generate`` (measured by
bench/bench_hf_generate.py, numbers in docs/BENCHMARKS.md: on 2 CPU cores the loop below
is over 10x the tokens/s of one-prompt-at-a-time ``generate``, greedy and sampled):

- Prompts are tokenized once, sorted by token length (longest first) and cut into buckets,
  so a bucket holds prompts of similar length and little padding. ``batch_size`` counts
  sequences, not prompts: a bucket holds ``batch_size // n`` prompts (at least one), each
  expanded to its ``n`` samples, so memory per forward is the same for greedy decoding and
  for sampling, and greedy calls get wide batches too (on CPU a wide batch is what turns
  the weights' memory traffic into arithmetic). A prompt's ``n`` samples are never split.
  Causal LMs are left padded, with position ids counted from each row's first real token.
- A token prefix that every prompt of the call shares (the teacher's few-shot template is
  ~375 of its ~410 tokens) is prefilled once per call, not once per prompt. On SDPA models
  its keys/values are also stored once and every row attends to that single copy
  (`_prefix_attention`, "cascade" attention), which halves a decoding step's attention time.
- Each prompt is prefilled **once**; its KV cache (and, for seq2seq, its encoder output) is
  then repeated ``n`` times. ``model.generate(num_return_sequences=n)`` would prefill it
  ``n`` times.
- The KV cache is written into preallocated room (`_roomy_cache`) instead of concatenated
  at every step, and finished rows (EOS, a stop string, ``max_tokens``) are cut out of the
  batch once they are an eighth of it.
- Stop strings are checked on the decoded tail of a row only when the new token could
  complete one (its text holds a stop string's last character), so the per-step cost is a
  set lookup for most tokens. The returned text is cut at the earliest stop string.

Seeding: every sample has its own random stream, keyed by
``derive_seed(params.seed, prompt, sample_index)`` and the token's position, and the noise
for each candidate token is a hash of that key and the token id (Gumbel-max sampling, see
`pick_tokens`). So a prompt's random draws do not depend on which prompts share its batch or
its shard: a prompt generated alone gets the same draws as in a batch, which is what makes
the request cache's per-prompt keys sound. The logits themselves can differ in the last
float bits between batch layouts (padding and the shared prefix change matrix shapes); with
this sampler that changes a token only on a near-tie of noisy scores, which is rare, and
greedy decoding only on a near-tie of logits. The same call (same prompts, same
``batch_size``) is bitwise reproducible. Unseeded sampling draws its per-row seeds from
torch's global generator, so ``torch.manual_seed`` still makes a run repeatable.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fdd_core.backends.base import Completion, Prompt, SamplingParams, derive_seed
from fdd_core.models import MODEL_LOAD_LOCK, ModelNotFoundError, hub_error, resolve_model
from fdd_core.progress import Progress

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'fdd[train]'  (torch, transformers, peft)"
_DTYPES = ("auto", "float32", "bfloat16", "float16")


def _torch():
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"the 'hf' backend needs torch and transformers: {INSTALL_HINT}") from exc
    return torch


def pick_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; an explicit CUDA device is checked."""
    torch = _torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {device!r} was asked for but no CUDA GPU is visible "
            "(torch.cuda.is_available() is False); use device 'auto' or 'cpu'"
        )
    return device


def pick_dtype(dtype: str, device: str):
    """'auto' -> bfloat16 on a CUDA device that supports it, else float32."""
    torch = _torch()
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, dtype)


def _folder_fingerprint(path: Path, samples: int = 16, chunk: int = 4096) -> str:
    """A short content hash of a checkpoint folder, cheap even for gigabytes of weights.

    Small files (configs, tokenizer) are hashed whole; a weight file contributes its size
    and `samples` chunks read at evenly spaced offsets. Retraining changes weights
    everywhere, so a folder retrained in place gets a new id (no stale cache entries),
    while a copy of the folder on another machine keeps its id (a moved shard still hits
    the request cache). Part of the model id.
    """
    h = hashlib.sha256()
    for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        size = f.stat().st_size
        h.update(f"{f.name}|{size};".encode())
        with f.open("rb") as fh:
            if size <= samples * chunk:
                h.update(fh.read())
                continue
            for i in range(samples):
                fh.seek((size - chunk) * i // (samples - 1))
                h.update(fh.read(chunk))
    return h.hexdigest()[:12]


def _identity(name: str, source: str) -> str:
    path = Path(source)
    if name == source and not path.is_dir():
        return name  # a hub id
    if not Path(name).expanduser().exists():
        return name  # a named model (the embedded one) converted to a local folder
    # Folder name plus content, not the full path: a copy elsewhere is the same model.
    return f"{path.resolve().name}#{_folder_fingerprint(path)}"


def _split_adapter(
    model: str, adapter: str | None, cache_dir: str | None
) -> tuple[str, str, str | None]:
    """(base name, base source, adapter folder); `model` may itself be an adapter folder."""
    source = resolve_model(model, cache_dir)
    folder = Path(source)
    if (
        folder.is_dir()
        and (folder / "adapter_config.json").is_file()
        and not (folder / "config.json").is_file()
    ):
        if adapter is not None:
            raise ModelNotFoundError(
                f"{folder} is a LoRA adapter folder, and adapter={adapter!r} was given too: "
                "pass the base model as `model` and the adapter folder as `adapter`"
            )
        base = json.loads((folder / "adapter_config.json").read_text()).get(
            "base_model_name_or_path"
        )
        if not base:
            raise ModelNotFoundError(
                f"{folder / 'adapter_config.json'} names no base_model_name_or_path; pass the "
                "base model as `model` and this folder as `adapter`"
            )
        return base, resolve_model(base, cache_dir), str(folder)
    if adapter is not None:
        apath = Path(adapter).expanduser()
        if not (apath / "adapter_config.json").is_file():
            raise ModelNotFoundError(
                f"adapter folder {apath} holds no adapter_config.json (expected a peft LoRA "
                "adapter saved with save_pretrained)"
            )
        adapter = str(apath)
    return model, source, adapter


def load_model(
    model: str,
    *,
    adapter: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    cache_dir: str | None = None,
) -> tuple[Any, Any, str]:
    """Load (model, tokenizer, model_id) in eval mode on the chosen device.

    The model id names what is served (it keys the request cache): the model name for the
    embedded model and hub ids, the folder name plus a content fingerprint for local
    checkpoints, and ``+adapter:`` with the adapter's folder name and fingerprint when a
    LoRA adapter is merged.
    """
    _torch()  # a clear message when the extra is missing
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    base_name, source, adapter_dir = _split_adapter(model, adapter, cache_dir)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    try:
        config = AutoConfig.from_pretrained(source)
        tok_source = source
        if adapter_dir and (Path(adapter_dir) / "tokenizer_config.json").is_file():
            tok_source = adapter_dir  # an adapter may ship its own (e.g. extended) tokenizer
        tokenizer = AutoTokenizer.from_pretrained(tok_source)
        cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        with MODEL_LOAD_LOCK:
            net = cls.from_pretrained(source, dtype=torch_dtype)
    except OSError as exc:
        if Path(source).is_dir():
            raise ModelNotFoundError(f"could not load the checkpoint in {source}: {exc}") from exc
        raise hub_error(base_name, exc) from exc
    if adapter_dir:
        try:
            from peft import PeftModel
        except ImportError as exc:
            raise ImportError(f"loading a LoRA adapter needs peft: {INSTALL_HINT}") from exc
        # Merging the LoRA deltas into the base weights makes inference as fast as the base.
        with MODEL_LOAD_LOCK:
            net = PeftModel.from_pretrained(net, adapter_dir).merge_and_unload()
    net.to(dev)
    net.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model_id = _identity(base_name, source)
    if adapter_dir:
        apath = Path(adapter_dir)
        model_id += f"+adapter:{apath.resolve().name}#{_folder_fingerprint(apath)}"
    return net, tokenizer, model_id


class _StopChecker:
    """Detects stop strings in a row's continuation at little per-step cost."""

    def __init__(self, tokenizer: Any, stops: tuple[str, ...]) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        # Every non-special token carries at least one byte, so a stop string that ends at
        # the newest token lies within this many trailing tokens (plus slack for a tail that
        # starts mid-character or loses a leading space when decoded alone).
        self.tail = max(len(s.encode()) for s in stops) + 4
        self.last_chars = {s[-1] for s in stops}
        # SentencePiece tokenizers drop a token's leading space when it is decoded alone, so
        # for a stop string ending in whitespace any token may complete it: check every step.
        self.every_step = any(c.isspace() for c in self.last_chars)
        self._candidate: dict[int, bool] = {}

    def could_complete(self, token: int) -> bool:
        if self.every_step:
            return True
        hit = self._candidate.get(token)
        if hit is None:
            piece = self.tokenizer.decode([token])
            hit = not piece or "\ufffd" in piece or any(c in piece for c in self.last_chars)
            self._candidate[token] = hit
        return hit

    def found(self, tokens: list[int]) -> bool:
        text = self.tokenizer.decode(tokens[-self.tail :], skip_special_tokens=True)
        return any(s in text for s in self.stops)


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Text before the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


@functools.lru_cache(maxsize=1)
def _roomy_layer_class():
    """DynamicLayer subclass that writes into preallocated room (built on first use)."""
    from transformers.cache_utils import DynamicLayer

    class RoomyLayer(DynamicLayer):
        def __init__(self, room: int) -> None:
            super().__init__()
            self.room = room
            self.length = 0
            self._k = self._v = None

        def _fit(self, buf, new, end: int):
            if buf is not None and end <= buf.shape[-2]:
                return buf
            grown = new.new_empty((*new.shape[:2], end + self.room, new.shape[-1]))
            if buf is not None:
                grown[:, :, : self.length] = buf[:, :, : self.length]
            return grown

        def _views(self) -> None:
            self.keys = self._k[:, :, : self.length]
            self.values = self._v[:, :, : self.length]

        def seed(self, keys, values, batch: int, tokens_to_come: int) -> None:
            """Start `batch` rows from a shared prefix's keys/values ([1, H, p, D])."""
            self.lazy_initialization(keys, values)
            self.length = keys.shape[-2]
            size = self.length + tokens_to_come + self.room
            self._k = keys.new_empty((batch, keys.shape[1], size, keys.shape[-1]))
            self._v = values.new_empty((batch, values.shape[1], size, values.shape[-1]))
            self._k[:, :, : self.length] = keys
            self._v[:, :, : self.length] = values
            self._views()

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            self._k = self._fit(self._k, key_states, end)
            self._v = self._fit(self._v, value_states, end)
            self._k[:, :, self.length : end] = key_states
            self._v[:, :, self.length : end] = value_states
            self.length = end
            self._views()
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

        def reset(self) -> None:
            self.length = 0
            self._k = self._v = None
            super().reset()

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove < 0 and self.is_initialized:
                self.length = max(0, self.length + tokens_to_remove)
                self._views()

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.length:
                self._k = self._k.repeat_interleave(repeats, dim=0)
                self._v = self._v.repeat_interleave(repeats, dim=0)
                self._views()

        def batch_select_indices(self, indices) -> None:
            if self.length:
                self._k = self._k[indices]
                self._v = self._v[indices]
                self._views()

        def reorder_cache(self, beam_idx) -> None:
            self.batch_select_indices(beam_idx.to(self._k.device))

    return RoomyLayer


def _roomy_cache(model: Any, room: int):
    """A DynamicCache whose full-attention layers write into preallocated room.

    The stock DynamicLayer concatenates each new key/value onto the whole cache, copying
    it at every step (for 64 rows of 400-token prompts, about a gigabyte per step on the
    embedded model). This layer allocates the prompt plus `room` slots once and writes in
    place; attention reads a view of the filled part. Sliding-window and other special
    layers keep their own classes.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    roomy = _roomy_layer_class()
    cache = DynamicCache(config=model.config)
    cache.layers = [roomy(room) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def shared_prefix_length(rows: list[list[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own."""
    if len(rows) < 2:
        return 0
    first = rows[0]
    limit = min(len(r) for r in rows) - 1
    p = 0
    while p < limit and all(r[p] == first[p] for r in rows):
        p += 1
    return p


PREFIX_ATTENTION = "fdd_prefix_sdpa"
_prefix_ctx = threading.local()  # the shared prefix's keys/values while a forward runs


def _prefix_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """SDPA, plus the call's shared prefix read once for all rows (cascade attention).

    While a `_Prefix` is active in this thread, the KV cache holds only each row's own
    tokens and every row also attends to the prefix's keys/values, which are stored once
    (``[1, kv_heads, p, d]``) instead of once per row. Attention is bound by reading the
    KV cache, so for 64 rows sharing a 375-token prompt prefix this cuts a decoding step's
    attention time by more than half and the cache memory by about 5x. Without an active
    prefix it is exactly transformers' SDPA attention.
    """
    torch = _torch()
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    layers = getattr(_prefix_ctx, "layers", None)
    if layers is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, **kwargs
        )
    pk, pv = layers[module.layer_idx]
    b, hq, q_len, d = query.shape
    hkv, s, p = key.shape[1], key.shape[-2], pk.shape[-2]
    g = hq // hkv  # query heads per key/value head, consecutive (as in repeat_kv)
    scale = scaling if scaling is not None else d**-0.5
    q = query.reshape(b, hkv, g * q_len, d)
    # prefix scores as one [kv_heads, rows * queries, p] matmul: the prefix is read once
    q_by_head = q.transpose(0, 1).reshape(hkv, b * g * q_len, d)
    s_pre = torch.bmm(q_by_head, pk[0].transpose(-1, -2)).view(hkv, b, g * q_len, p).transpose(0, 1)
    s_own = torch.matmul(q, key.transpose(-1, -2))
    if attention_mask is not None:
        m = attention_mask[..., -s:]
        m = (
            m[:, :, None]
            .expand(m.shape[0], m.shape[1], g, q_len, s)
            .reshape(m.shape[0], m.shape[1], g * q_len, s)
        )
        s_own = s_own.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else s_own + m
    elif q_len > 1:  # no padding: transformers left the causal mask to SDPA's is_causal
        causal = torch.ones(q_len, s, dtype=torch.bool, device=q.device).tril(s - q_len)
        s_own = s_own.masked_fill(~causal.repeat(g, 1), float("-inf"))
    scores = torch.cat([s_pre, s_own], dim=-1).float() * scale  # softmax in fp32 under bf16
    weights = scores.softmax(dim=-1).to(value.dtype)
    w_pre = weights[..., :p].transpose(0, 1).reshape(hkv, b * g * q_len, p)
    out = torch.bmm(w_pre, pv[0]).view(hkv, b, g * q_len, d).transpose(0, 1)
    out = out + torch.matmul(weights[..., p:], value)
    return out.reshape(b, hq, q_len, d).transpose(1, 2).contiguous(), None


@functools.lru_cache(maxsize=1)
def _register_prefix_attention() -> str:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(PREFIX_ATTENTION, _prefix_attention)
    AttentionMaskInterface.register(PREFIX_ATTENTION, sdpa_mask)
    return PREFIX_ATTENTION


def _use_prefix_attention(model: Any) -> bool:
    """Switch an SDPA causal LM to the cascade-capable attention; False when not possible."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    try:
        model.set_attn_implementation(_register_prefix_attention())
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        # an architecture that cannot switch keeps plain SDPA (and no cascade)
        log.debug("prefix attention unavailable for %s: %s", type(model).__name__, exc)
        return False
    return model.config._attn_implementation == PREFIX_ATTENTION


class _active_prefix:
    """Context manager: make `prefix` visible to the attention function in this thread."""

    def __init__(self, prefix: _Prefix | None) -> None:
        self.layers = prefix.layers if prefix is not None and prefix.cascade else None

    def __enter__(self) -> None:
        _prefix_ctx.layers = self.layers

    def __exit__(self, *exc: object) -> None:
        _prefix_ctx.layers = None


class _Prefix:
    """The KV cache of a token prefix that every prompt of a call shares, computed once.

    Teacher prompts are one long few-shot template plus a short question, so most of
    every prompt is the same few hundred tokens; prefilling them once per call instead of
    once per prompt removes most of the prefill work (vLLM calls this prefix caching).
    With `cascade` the rows attend to this single copy (see `_prefix_attention`); without
    it (models not on SDPA) each row's cache starts with a copy of it.
    """

    def __init__(self, length: int, layers: list, cascade: bool) -> None:
        self.length = length
        self.layers = layers
        self.cascade = cascade

    @classmethod
    def build(cls, model: Any, ids: list[int], device: str, cascade: bool) -> _Prefix | None:
        """None when the model has cache layers this sharing does not handle (sliding windows)."""
        torch = _torch()
        cache = _roomy_cache(model, 0)
        if not all(isinstance(layer, _roomy_layer_class()) for layer in cache.layers):
            return None
        x = torch.tensor([ids], dtype=torch.long, device=device)
        model(input_ids=x, past_key_values=cache, use_cache=True, logits_to_keep=1)
        layers = [(layer.keys.contiguous(), layer.values.contiguous()) for layer in cache.layers]
        return cls(len(ids), layers, cascade)


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
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,  # the prefill needs only the last position's logits
            )
        self.cache = out.past_key_values
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
                past_key_values=self.cache,
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
            past_key_values=self.cache,
            use_cache=True,
        )
        return out.logits[:, -1, :]


_MASK32 = 0xFFFFFFFF
_BLOCK = 256  # vocabulary block for two-stage sampling
_SALT_BLOCK, _SALT_TOKEN = 0x2545F491, 0x68E31DA4


def _mix32(x):
    """A 32-bit integer hash (multiply-xorshift), vectorized on int64 tensors.

    Every product stays below 2**59, so int64 never overflows on any device.
    """
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _MASK32
    return x ^ (x >> 16)


def _gumbel(row_keys, ids, salt: int):
    """Gumbel(0, 1) noise for each (row, id): a pure function of the row key and the id."""
    torch = _torch()
    h = _mix32(_mix32(row_keys[:, None] ^ ids) ^ salt)
    u = (h.double() + 0.5) / 2.0**32  # in (0, 1), never 0 or 1
    return -torch.log(-torch.log(u))


def row_keys(seeds, steps):
    """One hash key per row and step: the random stream of sample `seeds[i]` at `steps[i]`."""
    return _mix32((_mix32(seeds & _MASK32) + (steps + 1) * 0x9E3779B9) & _MASK32)


def _nucleus_floor(probs, top_p: float):
    """Per row, the probability of the last token inside the top-p nucleus.

    The nucleus is the smallest set of most likely tokens whose mass reaches top_p; tokens
    with probability >= the floor are kept. Found with a small top-k first (a trained model's
    nucleus is usually a few dozen tokens) and a full sort only for rows it does not cover.
    """
    torch = _torch()
    floor = torch.empty(probs.shape[0], dtype=probs.dtype, device=probs.device)
    todo = torch.arange(probs.shape[0], device=probs.device)
    for k in (64, 1024, probs.shape[-1]):
        k = min(k, probs.shape[-1])
        vals = probs[todo].topk(k, dim=-1).values
        before = vals.cumsum(dim=-1) - vals  # mass strictly above each candidate
        inside = before < top_p
        count = inside.sum(dim=-1)
        done = (count < k) | (k == probs.shape[-1])
        floor[todo[done]] = vals[done].gather(1, (count[done] - 1)[:, None]).squeeze(1)
        todo = todo[~done]
        if todo.numel() == 0:
            break
    return floor


def pick_tokens(logits, params: SamplingParams, keys=None) -> Any:
    """Next token per row: argmax when greedy, else an exact sample of softmax(logits / T).

    Sampling uses the Gumbel-max trick with noise that is a hash of (row key, token id), in
    two stages: a vocabulary block by its total probability, then a token inside the block.
    Both are exact, so the product is exactly the tempered (and top-p truncated)
    distribution. Because each token's noise depends only on its id and the row's key, not
    on its rank or on other rows, a logit that moves in the last float bit (a different
    batch layout) changes the choice only on a near-tie of perturbed scores, which is rare,
    whereas inverse-CDF sampling over 50k near-equal probabilities flips often (seen in
    tests on a random model: a flip within a dozen tokens).
    Two stages keep the noise to a few hundred numbers per row instead of the vocabulary.
    """
    torch = _torch()
    if params.greedy:
        return logits.argmax(dim=-1)
    scaled = logits.float() / params.temperature
    probs = torch.softmax(scaled, dim=-1)
    if params.top_p < 1.0:
        probs = probs.masked_fill(probs < _nucleus_floor(probs, params.top_p)[:, None], 0.0)
    rows, vocab = probs.shape
    pad = (-vocab) % _BLOCK
    if pad:
        probs = torch.nn.functional.pad(probs, (0, pad), value=0.0)
        scaled = torch.nn.functional.pad(scaled, (0, pad), value=0.0)
    nb = probs.shape[1] // _BLOCK
    block_ids = torch.arange(nb, device=probs.device)
    # log(0) = -inf: a block without a kept token is never chosen
    mass = probs.view(rows, nb, _BLOCK).sum(dim=-1).log().double()
    block = (mass + _gumbel(keys, block_ids, _SALT_BLOCK)).argmax(dim=-1)
    at = torch.arange(rows, device=probs.device)
    inner = scaled.view(rows, nb, _BLOCK)[at, block].double()  # [rows, BLOCK]
    inner = inner.masked_fill(probs.view(rows, nb, _BLOCK)[at, block] == 0, float("-inf"))
    token_ids = block[:, None] * _BLOCK + torch.arange(_BLOCK, device=probs.device)
    choice = (inner + _gumbel(keys, token_ids, _SALT_TOKEN)).argmax(dim=-1, keepdim=True)
    return token_ids.gather(1, choice).squeeze(1)


class HFBackend:
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
        if not isinstance(prompt, list) or not all(
            isinstance(m, dict) and isinstance(m.get("content"), str) for m in prompt
        ):
            raise TypeError(
                "a prompt is a string or a list of chat messages like "
                f"{{'role': 'user', 'content': '...'}}; got {str(prompt)[:120]!r}"
            )
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                prompt, tokenize=False, add_generation_prompt=True
            )
            return text, False  # the template already holds any BOS it wants
        return "\n\n".join(m["content"] for m in prompt), True

    def encode(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """Token ids per prompt, tokenized in two batched calls (with/without special tokens)."""
        rendered = []
        for i, p in enumerate(prompts):
            try:
                rendered.append(self.render(p))
            except TypeError as exc:
                raise TypeError(f"prompt {i}: {exc}") from exc
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
        while True:
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
