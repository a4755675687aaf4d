"""Padding-free ("packed") batching: a micro-batch flattened into one row (batching.pack).

The claims, each on a tiny randomly initialised Llama with the embedded tokenizer (CPU,
fp32): examples packed in one row do not attend to each other (transformers' SDPA and
eager with the block-diagonal mask it builds from the position ids, and fdd's attention
per example, modeling._segment_sdpa), the packed loss and gradients equal the padded
ones, a whole training run packed equals the padded run, and the setting is refused or
falls back where packing cannot run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math

import pytest

from fdd_core.config import TrainingConfig

torch = pytest.importorskip("torch")

from fdd_core.training import (  # noqa: E402  (needs torch: after the importorskip)
    IGNORE_INDEX,
    Encoded,
    collate,
    encode_examples,
    modeling,
    train_student,
    training_config_hash,
)
from fdd_core.training.batching import _padded_size, pack  # noqa: E402
from fdd_core.training.loop import _padding_free  # noqa: E402
from tests.test_training import (  # noqa: E402
    _one_thread,  # noqa: F401  (the module-wide 1-thread fixture, autouse)
    make_examples,
    train_and_snapshot,
)

# fp32 on the CPU: a packed row and a padded batch run the same arithmetic in other
# shapes (other kernel blockings), so results agree to rounding, not bit for bit.
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def tokenizer(tiny_causal_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_causal_dir)


def _model(path, attn="sdpa"):
    from transformers import AutoModelForCausalLM

    # eval(): no dropout, so two passes are comparable; gradients still flow.
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn).eval()


def _encoded(tokenizer, n=5):
    enc, _ = encode_examples(make_examples(n), tokenizer, seq2seq=False, max_seq_len=512)
    assert len({len(e.input_ids) for e in enc}) > 1  # rows of other lengths: padding needed
    return enc


# --------------------------------------------------------------------------- units


def test_pack_flattens_a_batch_into_one_row_with_restarting_positions():
    a = Encoded((1, 2, 3), (IGNORE_INDEX, 2, 3))
    b = Encoded((4, 5), (7, 5))  # a first label that is a target: pack masks it
    out = pack([a, b])
    assert set(out) == {"input_ids", "position_ids", "labels"}  # no attention_mask
    assert out["input_ids"].tolist() == [[1, 2, 3, 4, 5]]
    assert out["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    # Token 3 (a's last) must not learn to predict token 4 (b's first).
    assert out["labels"].tolist() == [[IGNORE_INDEX, 2, 3, IGNORE_INDEX, 5]]
    assert _padded_size([a, b], None, packed=True) == a.length + b.length == 5
    assert _padded_size([a, b], None) == 6
    with pytest.raises(ValueError, match="causal"):
        pack([Encoded((1, 2), (3, 4), seq2seq=True)])


def test_config_hash_sees_padding_free():
    assert TrainingConfig().padding_free == "off"  # opt-in (docs/training.md says why)
    assert training_config_hash(TrainingConfig()) != training_config_hash(
        TrainingConfig(padding_free="auto")
    )
    with pytest.raises(ValueError):
        TrainingConfig(padding_free="yes")


@pytest.mark.parametrize("attn", ["sdpa", "eager", "per-example"])
def test_packed_examples_do_not_attend_to_each_other(tiny_causal_dir, tokenizer, attn, monkeypatch):
    model = _model(tiny_causal_dir, "eager" if attn == "eager" else "sdpa")
    enc = _encoded(tokenizer, 3)
    split = []  # the per-example path really runs (and does not fall back to the mask)
    real = modeling._segment_lengths
    monkeypatch.setattr(
        modeling, "_segment_lengths", lambda *a: split.append(real(*a)) or split[-1]
    )
    with contextlib.ExitStack() as stack:
        if attn == "per-example":
            assert stack.enter_context(modeling._segment_attention(model))
            assert model.config._attn_implementation == modeling.SEGMENT_ATTENTION
        _check_packed_logits(model, enc, len(tokenizer), attn)
    assert model.config._attn_implementation == ("eager" if attn == "eager" else "sdpa")
    if attn == "per-example":
        assert [len(e.input_ids) for e in enc] in split
    else:
        assert not split


def _check_packed_logits(model, enc, vocab, attn):
    with torch.no_grad():
        row = pack(enc)
        logits = model(
            input_ids=row["input_ids"], position_ids=row["position_ids"], use_cache=False
        ).logits[0]
        # Every example's logits in the packed row equal its logits alone.
        start = 0
        for e in enc:
            alone = model(input_ids=torch.tensor([e.input_ids])).logits[0]
            got = logits[start : start + len(e.input_ids)]
            assert torch.allclose(got, alone, rtol=1e-4, atol=1e-5), (attn, start)
            start += len(e.input_ids)
        # Changing the first example's tokens changes its logits, and nothing after it.
        first = len(enc[0].input_ids)
        ids = row["input_ids"].clone()
        ids[0, 1:first] = (ids[0, 1:first] + 17) % vocab
        changed = model(input_ids=ids, position_ids=row["position_ids"], use_cache=False).logits[0]
    assert not torch.allclose(changed[:first], logits[:first], atol=1e-3)
    assert torch.allclose(changed[first:], logits[first:], rtol=1e-4, atol=1e-5)
    # The same row without the restarts (one long sequence) does see across: the test
    # above would catch a model that ignores them.
    with torch.no_grad():
        joined = model(input_ids=ids, use_cache=False).logits[0]
    assert not torch.allclose(joined[first:], changed[first:], atol=1e-3)


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss = modeling._target_loss(model, batch, seq2seq=False)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


@pytest.mark.parametrize("attn", ["masked", "per-example"])
@pytest.mark.parametrize("method", ["full", "lora"])
def test_packed_loss_and_gradients_equal_padded(tiny_causal_dir, tokenizer, method, attn):
    model = _model(tiny_causal_dir)
    with contextlib.ExitStack() as stack:
        if attn == "per-example":
            assert stack.enter_context(modeling._segment_attention(model))
        _check_packed_loss_and_grads(model, tokenizer, method)


def _check_packed_loss_and_grads(model, tokenizer, method):
    if method == "lora":
        cfg = TrainingConfig(method="lora", lora_r=4, lora_dropout=0.0)
        model = modeling._apply_lora(model, cfg, seq2seq=False).eval()
        # B starts at zero, so B's gradient is the only one; make A's non-zero too.
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.02)
    enc = _encoded(tokenizer)
    padded_loss, padded_grads = _loss_and_grads(model, collate(enc, tokenizer.pad_token_id))
    packed_loss, packed_grads = _loss_and_grads(model, pack(enc))
    assert torch.allclose(packed_loss, padded_loss, rtol=RTOL, atol=ATOL), (
        packed_loss,
        padded_loss,
    )
    assert padded_grads.keys() == packed_grads.keys() and padded_grads
    for name, grad in padded_grads.items():
        assert grad.abs().sum() > 0, name
        assert torch.allclose(packed_grads[name], grad, rtol=1e-4, atol=ATOL), name
    # Per example too: each one's summed loss packed alone equals padded alone, and the
    # packed batch's loss is their sum (nothing crosses the boundaries).
    with torch.no_grad():
        each = [modeling._target_loss(model, pack([e]), seq2seq=False) for e in enc]
        each_padded = [
            modeling._target_loss(model, collate([e], tokenizer.pad_token_id), seq2seq=False)
            for e in enc
        ]
    for a, b in zip(each, each_padded):
        assert torch.allclose(a, b, rtol=RTOL, atol=ATOL)
    assert torch.allclose(sum(each), packed_loss, rtol=RTOL, atol=1e-5)


def test_per_example_attention_falls_back_to_sdpa_where_rows_are_not_packed(tiny_causal_dir):
    from fdd_core.training.modeling import _segment_lengths

    pos = torch.tensor([[0, 1, 2, 0, 1]])
    assert _segment_lengths(pos, 5) == [3, 2]
    assert _segment_lengths(torch.arange(5)[None], 5) is None  # one sequence: not packed
    assert _segment_lengths(torch.tensor([[0, 1, 3, 0, 1]]), 5) is None  # not aranges
    assert _segment_lengths(torch.tensor([[1, 2, 0, 1]]), 4) is None  # no start at 0
    assert _segment_lengths(torch.tensor([[0, 1], [0, 1]]), 2) is None  # batch of two
    assert _segment_lengths(None, 5) is None
    # Padded batches (with an attention mask) give the same logits either way.
    model = _model(tiny_causal_dir)
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits
        with modeling._segment_attention(model):
            got = model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(got[mask.bool()], want[mask.bool()], atol=1e-6)
    # A model not on SDPA keeps its own attention.
    eager = _model(tiny_causal_dir, "eager")
    with modeling._segment_attention(eager) as switched:
        assert not switched and eager.config._attn_implementation == "eager"


def test_segment_sdpa_equals_a_block_diagonal_mask_and_leaves_other_attention_alone(
    monkeypatch,
):
    from types import SimpleNamespace

    import transformers.integrations.sdpa_attention as sdpa

    torch.manual_seed(0)
    module = SimpleNamespace(num_key_value_groups=2, is_causal=True)
    q = torch.randn(1, 4, 5, 8)
    k, v = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    pos = torch.tensor([[0, 1, 2, 0, 1]])
    got, _ = modeling._segment_sdpa(module, q, k, v, None, position_ids=pos)
    seg = torch.tensor([0, 0, 0, 1, 1])
    idx = torch.arange(5)
    mask = (seg[:, None] == seg[None, :]) & (idx[:, None] >= idx[None, :])
    want = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), attn_mask=mask
    )
    assert got.shape == (1, 5, 4, 8)  # (batch, tokens, heads, dim), as transformers' SDPA
    assert torch.allclose(got, want.transpose(1, 2), atol=1e-6)
    calls = []
    monkeypatch.setattr(
        sdpa, "sdpa_attention_forward", lambda *a, **kw: calls.append(kw) or ("sdpa", None)
    )
    for extra in ({"sliding_window": 2}, {"s_aux": torch.zeros(4)}, {}):
        kw = {"position_ids": pos, **extra} if extra else {}  # {}: no position ids
        assert modeling._segment_sdpa(module, q, k, v, None, **kw)[0] == "sdpa"
    assert len(calls) == 3


class _IgnoresPositions(torch.nn.Module):
    """A causal model that drops `position_ids`: its attention cannot see the restarts."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, position_ids=None, use_cache=None, **kw):
        return self.inner(input_ids=input_ids, use_cache=False, **kw)


def test_padding_free_setting_probes_the_model_and_refuses_what_cannot_run(tiny_causal_dir, caplog):
    model = _model(tiny_causal_dir)
    model.train()
    assert modeling._packing_keeps_examples_apart(model)
    assert model.training  # the probe puts the mode back
    assert _padding_free("auto", False, "longest", model)
    assert _padding_free("on", False, "longest", model)
    assert not _padding_free("off", False, "longest", model)
    # Padding to the maximum is the benchmark baseline: "auto" pads, "on" contradicts it.
    assert not _padding_free("auto", False, "max_length", model)
    with pytest.raises(ValueError, match="max_length"):
        _padding_free("on", False, "max_length", model)
    # Encoder-decoder students are padded: "auto" quietly, "on" refused.
    assert not _padding_free("auto", True, "longest", model)
    with pytest.raises(ValueError, match="encoder-decoder"):
        _padding_free("on", True, "longest", model)
    # A model whose attention ignores the restarts: "auto" pads (with a warning), "on" fails.
    blind = _IgnoresPositions(model)
    assert not modeling._packing_keeps_examples_apart(blind)
    with caplog.at_level(logging.WARNING, logger="fdd_core.training"):
        assert not _padding_free("auto", False, "longest", blind)
    assert "padding instead" in caplog.text
    with pytest.raises(ValueError, match="apart"):
        _padding_free("on", False, "longest", blind)


# --------------------------------------------------------------------------- real runs


def test_a_packed_run_equals_the_padded_run(tmp_path, tiny_causal_dir):
    snaps = {}

    def run(name, padding_free):
        cfg = TrainingConfig(
            method="full",
            warmup_ratio=0.0,
            max_steps=3,
            batch_size=4,
            learning_rate=5e-3,
            padding_free=padding_free,
        )
        return train_and_snapshot(tiny_causal_dir, cfg, tmp_path / name, snaps, name)

    padded, packed = run("padded", "off"), run("packed", "on")
    assert padded["padding"] == "longest" and packed["padding"] == "packed"
    assert packed["training_config"]["padding_free"] == "on"
    assert packed["training_config_hash"] != padded["training_config_hash"]
    # The same examples per step, so the same counts; packed computes no padding.
    for key in ("steps", "tokens_seen", "target_tokens", "n_examples", "epochs"):
        assert packed[key] == padded[key], key
    assert packed["padded_tokens"] == packed["tokens_seen"] < padded["padded_tokens"]
    for a, b in zip(packed["loss_per_step"], padded["loss_per_step"]):
        assert math.isclose(a, b, rel_tol=1e-4), (packed["loss_per_step"], padded["loss_per_step"])
    for k, v in snaps["padded"].items():
        assert torch.allclose(snaps["packed"][k], v, atol=1e-5), k
    # The attention per example is for training only: the saved model is back on SDPA.
    saved = (tmp_path / "packed" / "config.json").read_text()
    assert modeling.SEGMENT_ATTENTION not in saved


def test_an_encoder_decoder_student_is_padded(tmp_path, tiny_seq2seq_dir):
    ex = make_examples(4)
    auto = TrainingConfig(method="full", max_steps=1, batch_size=4, padding_free="auto")
    train_student(ex, str(tiny_seq2seq_dir), auto, tmp_path / "auto", device="cpu")
    meta = json.loads((tmp_path / "auto" / "meta.json").read_text())
    assert meta["architecture"] == "seq2seq" and meta["padding"] == "longest"
    on = TrainingConfig(method="full", max_steps=1, batch_size=4, padding_free="on")
    with pytest.raises(ValueError, match="encoder-decoder"):
        train_student(ex, str(tiny_seq2seq_dir), on, tmp_path / "on", device="cpu")
    assert not (tmp_path / "on").exists()
