"""Token choice: greedy, or seeded Gumbel-max sampling with top-p whose noise depends only
on (sample key, position, token id), so draws do not depend on batch layout."""

from __future__ import annotations

from typing import Any

from fdd_core.backends.base import SamplingParams
from fdd_core.backends.hf.loading import _torch

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
