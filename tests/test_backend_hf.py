"""The hf backend against real (tiny, random) transformers models, plus one embedded-model run.

Correctness of batching is checked against the plain one-prompt-at-a-time `model.generate`
loop, so left padding, position ids, KV-cache trimming and bucketing all have to be right.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fdd_core.backends import clear_backends, get_backend, make_backend
from fdd_core.backends.base import SamplingParams
from fdd_core.backends.hf import HFBackend, cut_at_stop, pick_tokens, row_keys
from fdd_core.config import ModelConfig
from fdd_core.models import ModelNotFoundError
from fdd_core.progress import Progress, progress_enabled

torch = pytest.importorskip("torch")  # fdd_core.backends.hf imports torch only when used
pytest.importorskip("transformers")

# Prompts of clearly different token lengths, so bucketing reorders them and batches pad.
PROMPTS = [
    "Tom has 3 apples.",
    "A farmer sells 12 eggs a day for 7 days and then buys 20 more. How many eggs?",
    "x",
    "Question: Sara reads 15 pages a day. How many pages does she read in a week?\nAnswer:",
    "def solve():",
]
# top_p=1 keeps the sampler cheap on this flat random model (its top-p nucleus spans most
# of the vocabulary); the sampler tests below cover top_p < 1.
SAMPLED = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 8}


def _lively_copy(src, dst, seq2seq: bool = False):
    """The tiny random model with larger hidden weights.

    At its initial scale a tied-embedding random model greedily repeats the prompt's last
    token forever, which would make greedy comparisons trivially true; with these weights
    it writes varied text, so a wrong mask, position or cache row changes the output.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    model = cls.from_pretrained(src)
    gen = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if (".layers." in name or ".block." in name) and p.dim() == 2 and "relative" not in name:
            p.data = torch.randn(p.shape, generator=gen) * 0.3
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


@pytest.fixture(scope="module")
def tiny_dir(tiny_causal_dir, tmp_path_factory):
    return _lively_copy(tiny_causal_dir, tmp_path_factory.mktemp("lively-causal"))


@pytest.fixture(scope="module")
def tiny(tiny_dir) -> HFBackend:
    # 4 sequences a batch: greedy buckets of 4 prompts, n=2 buckets of 2 (both pad)
    return HFBackend(str(tiny_dir), batch_size=4, device="cpu", progress=False)


@pytest.fixture(scope="module")
def tiny_s2s(tiny_seq2seq_dir, tmp_path_factory) -> HFBackend:
    path = _lively_copy(tiny_seq2seq_dir, tmp_path_factory.mktemp("lively-s2s"), seq2seq=True)
    return HFBackend(str(path), batch_size=4, device="cpu", progress=False)


def plain_generate(backend: HFBackend, prompt, max_tokens: int) -> tuple[str, int]:
    """The reference: transformers' own greedy generate on one unpadded prompt."""
    text, special = backend.render(prompt)
    enc = backend.tokenizer(text, add_special_tokens=special, return_tensors="pt")
    with torch.inference_mode():
        out = backend.model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=max_tokens,
            pad_token_id=backend.tokenizer.pad_token_id,
        )
    new = out[0] if backend.is_encoder_decoder else out[0, enc["input_ids"].shape[1] :]
    new = [t for t in new.tolist() if t != backend.tokenizer.pad_token_id or t in backend._eos]
    return backend.tokenizer.decode(new, skip_special_tokens=True), enc["input_ids"].shape[1]


# --------------------------------------------------------------------------- shape and order


def test_n_completions_per_prompt_in_prompt_order(tiny):
    params = SamplingParams(n=3, seed=7, **SAMPLED)
    out = tiny.generate(PROMPTS, params)
    assert len(out) == len(PROMPTS)
    assert all(len(row) == 3 for row in out)
    # prompt_tokens ties each row to its prompt, whatever order the buckets ran in
    for prompt, row in zip(PROMPTS, out):
        expected = len(tiny.tokenizer(prompt)["input_ids"])
        assert {c.prompt_tokens for c in row} == {expected}
    # and each prompt gets what it gets when generated alone (per-prompt random streams)
    for i in (0, 2, 4):
        assert tiny.generate([PROMPTS[i]], params)[0] == out[i]


@pytest.mark.parametrize(
    ("batch_size", "n", "sizes"),
    [(4, 1, [4, 1]), (4, 2, [2, 2, 1]), (4, 3, [1] * 5), (6, 3, [2, 2, 1]), (64, 1, [5])],
)
def test_batch_size_counts_sequences(tiny, monkeypatch, batch_size, n, sizes):
    """A bucket holds batch_size // n prompts (at least one); rows = prompts x n."""
    backend = tiny.with_batch_size(batch_size)
    seen: list[tuple[int, int]] = []
    real = HFBackend._generate_bucket

    def spy(self, rows, seeds, params, *args, **kwargs):
        out = real(self, rows, seeds, params, *args, **kwargs)
        seen.append((len(rows), sum(len(r) for r in out)))
        return out

    monkeypatch.setattr(HFBackend, "_generate_bucket", spy)
    params = SamplingParams(max_tokens=2) if n == 1 else SamplingParams(n=n, seed=0, **SAMPLED)
    out = backend.generate(PROMPTS, params)
    assert [prompts for prompts, _ in seen] == sizes
    assert [rows for _, rows in seen] == [s * n for s in sizes]
    assert all(len(row) == n for row in out)


def test_empty_prompt_list(tiny):
    assert tiny.generate([], SamplingParams()) == []


def test_malformed_prompt_names_its_index(tiny):
    with pytest.raises(
        TypeError, match="prompt 1, message 0: a prompt is a string or a list of chat"
    ):
        tiny.generate(["ok", [{"role": "user"}]], SamplingParams(max_tokens=1))


def test_progress_counts_a_real_generation(tiny_dir, monkeypatch):
    import fdd_core.backends.hf.backend as hf_mod  # where HFBackend looks Progress up

    bars: list[Progress] = []

    class Recording(Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.drawn = self.active  # closed (inactive) again once generation ends
            bars.append(self)

    monkeypatch.setattr(hf_mod, "Progress", Recording)
    params = SamplingParams(n=2, seed=0, **SAMPLED)
    out = HFBackend(str(tiny_dir), device="cpu", progress=True).generate(PROMPTS[:3], params)
    HFBackend(str(tiny_dir), device="cpu", progress=False).generate(PROMPTS[:1], params)
    shown, quiet = bars
    assert shown.drawn and not quiet.drawn
    assert shown.total == shown.count == 6  # every sequence, counted as it finished
    assert shown.tokens == sum(c.completion_tokens for row in out for c in row)


def test_max_tokens_respected(tiny):
    for max_tokens in (1, 5):
        out = tiny.generate(
            PROMPTS, SamplingParams(n=2, seed=1, temperature=1.0, max_tokens=max_tokens)
        )
        for row in out:
            for c in row:
                assert 1 <= c.completion_tokens <= max_tokens
                if c.finish_reason == "length":
                    assert c.completion_tokens == max_tokens
    # the random tiny model almost never samples EOS, so most rows must hit the limit
    greedy = tiny.generate(PROMPTS, SamplingParams(max_tokens=6))
    assert sum(row[0].finish_reason == "length" for row in greedy) >= 3


# --------------------------------------------------------------------------- greedy = reference


def test_greedy_batched_equals_plain_generate_loop(tiny):
    out = tiny.generate(PROMPTS, SamplingParams(max_tokens=10))
    for prompt, row in zip(PROMPTS, out):
        text, n_prompt = plain_generate(tiny, prompt, 10)
        assert row[0].text == text, prompt
        assert row[0].prompt_tokens == n_prompt


def test_greedy_chat_prompts_equal_plain_generate(tiny):
    chats = [
        [{"role": "user", "content": "What is 2 + 3?"}],
        [
            {"role": "system", "content": "You write Python."},
            {"role": "user", "content": "A shop sells 4 pens at 3 dollars each. Total cost?"},
        ],
    ]
    out = tiny.generate(chats + ["raw text prompt"], SamplingParams(max_tokens=8))
    for prompt, row in zip(chats + ["raw text prompt"], out):
        assert row[0].text == plain_generate(tiny, prompt, 8)[0]
    # chat prompts go through the template (its markers are counted), raw text as is
    rendered = tiny.tokenizer.apply_chat_template(
        chats[0], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>assistant" in rendered
    assert out[0][0].prompt_tokens == len(
        tiny.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    )


def test_chat_without_template_joins_contents(tiny_dir):
    backend = HFBackend(str(tiny_dir), device="cpu", progress=False)
    backend.tokenizer.chat_template = None
    text, special = backend.render(
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    )
    assert (text, special) == ("a\n\nb", True)
    out = backend.generate([[{"role": "user", "content": "a b c"}]], SamplingParams(max_tokens=2))
    assert out[0][0].prompt_tokens == len(backend.tokenizer("a b c")["input_ids"])


TEMPLATE = "You are a careful teacher. Solve the problem with a short Python program. " * 3


@pytest.mark.parametrize("cascade", [True, False], ids=["cascade-attention", "copied-prefix"])
def test_shared_prefix_greedy_equals_plain_generate(tiny, cascade, monkeypatch):
    prompts = [TEMPLATE + p for p in PROMPTS]
    assert tiny._cascade  # the tiny Llama runs on SDPA, so cascade attention is available
    monkeypatch.setattr(tiny, "_cascade", cascade)
    out = tiny.generate(prompts, SamplingParams(max_tokens=8))
    for prompt, row in zip(prompts, out):
        assert row[0].text == plain_generate(tiny, prompt, 8)[0], prompt


def test_shared_prefix_sampling_matches_prompt_alone(tiny):
    prompts = [TEMPLATE + p for p in PROMPTS[:3]]
    params = SamplingParams(n=2, seed=5, **SAMPLED)
    together = tiny.generate(prompts, params)
    assert [tiny.generate([p], params)[0] for p in prompts] == together


def test_roomy_cache_matches_dynamic_cache_even_when_it_grows(tiny):
    from transformers import DynamicCache

    from fdd_core.backends.hf import _roomy_cache

    ids = torch.tensor([tiny.encode(["Tom has 3 apples and 4 pears."])[0]])
    caches = [DynamicCache(config=tiny.model.config), _roomy_cache(tiny.model, 1)]  # room 1
    with torch.inference_mode():
        outs = [tiny.model(input_ids=ids, cache=c, use_cache=True) for c in caches]
        for _ in range(4):  # the roomy cache outgrows its room and reallocates
            nxt = outs[0].logits[:, -1:].argmax(-1)
            outs = [tiny.model(input_ids=nxt, cache=c, use_cache=True) for c in caches]
            assert torch.allclose(outs[0].logits, outs[1].logits, atol=1e-5)
    assert caches[1].get_seq_length() == ids.shape[1] + 4


def test_shared_prefix_length():
    from fdd_core.backends.hf import shared_prefix_length

    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert shared_prefix_length([[1, 2], [1, 2]]) == 1  # each row keeps a token of its own
    assert shared_prefix_length([[1, 2, 3]]) == 0


# --------------------------------------------------------------------------- stop strings


def test_stop_string_truncates_and_stops_early(tiny):
    prompt = PROMPTS[1]
    free = tiny.generate([prompt], SamplingParams(max_tokens=24))[0][0]
    assert free.completion_tokens == 24 and len(free.text) > 12
    space = free.text.index(" ", 5)
    # a plain stop string, and one ending in a space (completed by the next word's token)
    for stop in (free.text[8:11], free.text[space - 2 : space + 1]):
        assert stop in free.text
        got = tiny.generate([prompt], SamplingParams(max_tokens=24, stop=[stop, "\x00never"]))[0][0]
        assert got.text == free.text[: free.text.find(stop)]
        assert got.finish_reason == "stop"
        assert got.completion_tokens < 24  # generation really stopped, not just the text


def test_stop_strings_in_a_sampled_batch(tiny):
    params = SamplingParams(n=2, seed=3, **SAMPLED)
    free = tiny.generate(PROMPTS, params)
    stop = free[3][1].text[4:6]
    cut = tiny.generate(PROMPTS, SamplingParams(n=2, seed=3, stop=[stop], **SAMPLED))
    for row_free, row_cut in zip(free, cut):
        for a, b in zip(row_free, row_cut):
            expected, hit = cut_at_stop(a.text, [stop])
            assert b.text == expected
            assert b.finish_reason == ("stop" if hit else a.finish_reason)


def test_cut_at_stop_takes_the_earliest():
    assert cut_at_stop("ab\n\ncd###", ["###", "\n\n"]) == ("ab", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)


# --------------------------------------------------------------------------- sampling


def test_seeded_sampling_reproducible_and_seeds_differ(tiny):
    a = tiny.generate(PROMPTS, SamplingParams(n=2, seed=11, **SAMPLED))
    b = tiny.generate(PROMPTS, SamplingParams(n=2, seed=11, **SAMPLED))
    c = tiny.generate(PROMPTS, SamplingParams(n=2, seed=12, **SAMPLED))
    assert a == b
    assert [[x.text for x in r] for r in a] != [[x.text for x in r] for r in c]
    # the n samples of one prompt draw from different streams
    assert all(row[0].text != row[1].text for row in a)


def test_unseeded_sampling_follows_torch_global_seed(tiny):
    params = SamplingParams(n=2, **SAMPLED)
    torch.manual_seed(5)
    a = tiny.generate(PROMPTS[:2], params)
    torch.manual_seed(5)
    b = tiny.generate(PROMPTS[:2], params)
    c = tiny.generate(PROMPTS[:2], params)
    assert a == b and a != c


def _tv_distance(counts, p):
    return 0.5 * (counts / counts.sum() - p).abs().sum().item()


def test_sampler_draws_the_tempered_top_p_distribution():
    # 300 tokens: two vocabulary blocks, the second one padded, so both stages are exercised
    gen = torch.Generator().manual_seed(0)
    vocab, rows, steps = 300, 200, 60
    logits = torch.randn(vocab, generator=gen) * 2
    seeds = torch.arange(rows)
    for temperature, top_p in ((1.0, 1.0), (0.7, 0.8)):
        params = SamplingParams(temperature=temperature, top_p=top_p)
        counts = torch.zeros(vocab)
        for step in range(steps):
            keys = row_keys(seeds, torch.full_like(seeds, step))
            counts += torch.bincount(
                pick_tokens(logits.expand(rows, vocab), params, keys), minlength=vocab
            )
        p = torch.softmax(logits / temperature, dim=-1)
        if top_p < 1:
            ranked = p.sort(descending=True).values
            kept = int(((ranked.cumsum(0) - ranked) < top_p).sum())
            p = torch.where(p >= ranked[kept - 1], p, 0.0)
            p = p / p.sum()
            assert counts[p == 0].sum() == 0  # nothing outside the nucleus, ever
        # as close to the target as torch.multinomial's own sample of the same size
        reference = torch.bincount(
            torch.multinomial(p, rows * steps, replacement=True, generator=gen), minlength=vocab
        ).float()
        assert _tv_distance(counts, p) < max(2 * _tv_distance(reference, p), 0.02)


def test_sampler_row_choice_ignores_other_rows_and_float_noise():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 1000, generator=gen) * 0.1  # nearly flat: the hardest case
    keys = row_keys(torch.arange(6), torch.zeros(6, dtype=torch.long))
    params = SamplingParams(temperature=1.0, top_p=0.95)
    base = pick_tokens(logits, params, keys)
    shuffled = pick_tokens(logits[[3, 4, 5, 0, 1, 2]], params, keys[[3, 4, 5, 0, 1, 2]])
    assert shuffled.tolist() == base[[3, 4, 5, 0, 1, 2]].tolist()
    noisy = logits + torch.randn(logits.shape, generator=gen) * 1e-6
    assert pick_tokens(noisy, params, keys).tolist() == base.tolist()
    other_step = row_keys(torch.arange(6), torch.ones(6, dtype=torch.long))
    assert pick_tokens(logits, params, other_step).tolist() != base.tolist()
    assert pick_tokens(logits, SamplingParams(), None).tolist() == logits.argmax(-1).tolist()


# --------------------------------------------------------------------------- LoRA and seq2seq


def _save_adapter(base_dir, out_dir, *, random_b: bool):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from fdd_core.models import peft_quietly

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    cfg = LoraConfig(
        r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=not random_b
    )
    with peft_quietly():  # peft reads a deprecated transformers property
        peft_model = get_peft_model(model, cfg)
    if random_b:  # make the update large enough to change greedy choices of a random model
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.data.normal_(0, 0.5)
    peft_model.save_pretrained(out_dir)
    return out_dir


def test_lora_adapter_changes_outputs(tiny, tiny_dir, tmp_path):
    params = SamplingParams(max_tokens=8)
    base = tiny.generate(PROMPTS, params)
    live = _save_adapter(tiny_dir, tmp_path / "live", random_b=True)
    zero = _save_adapter(tiny_dir, tmp_path / "zero", random_b=False)  # B = 0: a no-op
    with_live = HFBackend(str(tiny_dir), adapter=str(live), device="cpu", progress=False)
    with_zero = HFBackend(str(tiny_dir), adapter=str(zero), device="cpu", progress=False)
    assert "+adapter:" in with_live.model_id and with_live.model_id != with_zero.model_id
    assert with_zero.generate(PROMPTS, params) == base
    assert with_live.generate(PROMPTS, params) != base
    # an adapter folder given as the model finds its base from adapter_config.json
    alone = HFBackend(str(live), device="cpu", progress=False)
    assert alone.generate(PROMPTS, params) == with_live.generate(PROMPTS, params)


def test_model_id_follows_content_not_location(tiny_dir, tmp_path):
    import shutil

    copy = Path(shutil.copytree(tiny_dir, tmp_path / "a" / tiny_dir.name))
    original = HFBackend(str(tiny_dir), device="cpu", progress=False).model_id
    assert HFBackend(str(copy), device="cpu", progress=False).model_id == original
    assert original.startswith(tiny_dir.name + "#")
    # retrained in place: same files, same sizes, every weight a little different
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(copy)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-3)
    model.save_pretrained(copy)
    assert HFBackend(str(copy), device="cpu", progress=False).model_id != original


def test_bad_adapter_and_missing_model_errors(tiny_causal_dir, tmp_path):
    with pytest.raises(ModelNotFoundError, match="adapter_config.json"):
        HFBackend(str(tiny_causal_dir), adapter=str(tmp_path), device="cpu")
    with pytest.raises(ModelNotFoundError, match="not found"):
        HFBackend(str(tmp_path / "nope" / "model"), device="cpu")


def test_seq2seq_greedy_equals_plain_generate(tiny_s2s):
    assert tiny_s2s.is_encoder_decoder
    out = tiny_s2s.generate(PROMPTS, SamplingParams(max_tokens=8))
    for prompt, row in zip(PROMPTS, out):
        assert row[0].text == plain_generate(tiny_s2s, prompt, 8)[0], prompt


def test_seq2seq_sampling_shape_and_seed(tiny_s2s):
    params = SamplingParams(n=2, seed=4, **SAMPLED)
    out = tiny_s2s.generate(PROMPTS, params)
    assert [len(r) for r in out] == [2] * len(PROMPTS)
    assert out == tiny_s2s.generate(PROMPTS, params)
    assert tiny_s2s.generate([PROMPTS[3]], params)[0] == out[3]


# --------------------------------------------------------------------------- factory, lifecycle


def test_get_backend_memoizes_loaded_weights(tiny_causal_dir):
    clear_backends()
    cfg = ModelConfig(model=str(tiny_causal_dir), device="cpu", batch_size=4)
    a = get_backend(cfg)
    assert get_backend(cfg) is a
    b = get_backend(cfg.model_copy(update={"batch_size": 8}))
    assert b is not a and b.batch_size == 8 and b.model is a.model
    assert make_backend(cfg) is not a
    a.close()
    c = get_backend(cfg)  # a closed backend is reloaded
    assert c is not a and not c.closed
    clear_backends()
    assert c.closed


def test_make_backend_openai_needs_base_url():
    with pytest.raises(ValueError, match="base_url"):
        make_backend(ModelConfig(backend="openai", model="m"))


def test_make_backend_passes_openai_settings():
    cfg = ModelConfig(
        backend="openai",
        model="served-model",
        base_url="http://127.0.0.1:9/v1",
        max_concurrency=3,
        request_timeout_s=7.0,
        endpoint="completions",
    )
    backend = make_backend(cfg)
    assert (backend.name, backend.model_id) == ("openai", "served-model")
    assert (backend.max_concurrency, backend.timeout_s, backend.endpoint) == (3, 7.0, "completions")
    assert get_backend(cfg) is not get_backend(cfg)  # holds no weights: never memoized


def test_make_backend_vllm_is_lazy():
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="vllm"):
            make_backend(ModelConfig(backend="vllm", model="smollm2-135m-instruct"))
    else:
        pytest.skip("vllm is installed here; building an engine is the vllm tests' job")


def test_closed_backend_refuses(tiny_causal_dir):
    backend = HFBackend(str(tiny_causal_dir), device="cpu", progress=False)
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.generate(["x"], SamplingParams())


def test_bfloat16_weights_generate(tiny_dir):
    backend = HFBackend(str(tiny_dir), device="cpu", dtype="bfloat16", progress=False)
    assert backend.model.dtype == torch.bfloat16
    prompts = [TEMPLATE + p for p in PROMPTS[:3]]  # through the shared-prefix attention too
    out = backend.generate(prompts, SamplingParams(n=2, seed=1, **SAMPLED))
    assert [len(r) for r in out] == [2, 2, 2]
    assert all(1 <= c.completion_tokens <= SAMPLED["max_tokens"] for r in out for c in r)
    with pytest.raises(ValueError, match="dtype must be one of"):
        HFBackend(str(tiny_dir), device="cpu", dtype="fp8")


def test_cuda_without_gpu_is_a_clear_error(tiny_causal_dir):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        HFBackend(str(tiny_causal_dir), device="cuda")


def test_progress_switches(monkeypatch):
    monkeypatch.setenv("FDD_PROGRESS", "0")
    assert not progress_enabled(True)
    monkeypatch.setenv("FDD_PROGRESS", "1")
    assert progress_enabled(None) and not progress_enabled(False)
    monkeypatch.delenv("FDD_PROGRESS")
    assert progress_enabled(None) is False  # pytest captures stderr: not a terminal
    bar = Progress(10, "x", enabled=True, delay=0)
    assert bar.active
    bar.update(2, tokens=50)
    assert bar.count == 2 and bar.tokens == 50 and bar.tokens_per_s > 0
    bar.close()
    assert not Progress(10, enabled=False).active


# --------------------------------------------------------------------------- embedded model


@pytest.mark.slow
def test_embedded_model_answers_chat_prompts(embedded_model_dir):
    backend = HFBackend("smollm2-135m-instruct", device="cpu", progress=False)
    assert backend.model_id == "smollm2-135m-instruct"
    chats = [
        [{"role": "user", "content": "What is 2 + 3? Reply with the number only."}],
        [{"role": "user", "content": "Write a Python program that prints 10 times 4."}],
    ]
    out = backend.generate(chats, SamplingParams(n=2, temperature=0.7, seed=0, max_tokens=12))
    assert [len(r) for r in out] == [2, 2]
    for row in out:
        for c in row:
            assert c.text.strip() and c.completion_tokens <= 12
            assert "<|im_start|>" not in c.text  # special tokens are not returned
    greedy = backend.generate(chats[:1], SamplingParams(max_tokens=8))[0][0]
    assert "5" in greedy.text
