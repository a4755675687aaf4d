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

Modules, one job each: `loading` (device, dtype, model + tokenizer, identity), `stops`
(stop strings), `kv_cache` (the preallocating DynamicLayer subclass), `cascade` (the shared
prefix and its attention function), `batch` (a bucket's state), `sampling` (token choice)
and `backend` (`HFBackend`). `versions` checks that the installed transformers is in the
supported range, since `kv_cache` and `cascade` rely on its internals.
"""

from __future__ import annotations

from fdd_core.backends.hf.versions import check_transformers

check_transformers()  # a clear error now, not an AttributeError deep in a generate call

from fdd_core.backends.hf.backend import HFBackend  # noqa: E402
from fdd_core.backends.hf.cascade import PREFIX_ATTENTION, shared_prefix_length  # noqa: E402
from fdd_core.backends.hf.kv_cache import _roomy_cache  # noqa: E402
from fdd_core.backends.hf.loading import (  # noqa: E402
    INSTALL_HINT,
    load_model,
    pick_device,
    pick_dtype,
)
from fdd_core.backends.hf.sampling import pick_tokens, row_keys  # noqa: E402
from fdd_core.backends.hf.stops import cut_at_stop  # noqa: E402

__all__ = [
    "INSTALL_HINT",
    "PREFIX_ATTENTION",
    "HFBackend",
    "_roomy_cache",
    "cut_at_stop",
    "load_model",
    "pick_device",
    "pick_dtype",
    "pick_tokens",
    "row_keys",
    "shared_prefix_length",
]
