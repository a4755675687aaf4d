"""Student fine-tuning: batching, loss masking, that it learns, LoRA, determinism, atomicity."""

from __future__ import annotations

import json
import math

import pytest

from fdd_core.config import ModelConfig, StudentConfig, TrainingConfig
from fdd_core.prompts import student_prompt
from fdd_core.schemas import Example, ModelRef, Problem, Rationale

torch = pytest.importorskip("torch")

from fdd_core.training import (  # noqa: E402  (needs torch: after the importorskip)
    IGNORE_INDEX,
    Encoded,
    collate,
    encode_examples,
    load_student,
    modeling,
    plan_batches,
    read_model_ref,
    student,
    student_model_config,
    train_student,
    training_config_hash,
)

# Question templates with the program that solves them; numbers vary per example, so a
# model must read the question (copy its numbers) to reproduce the program.
TEMPLATES = [
    (
        "{n} has {a} apples and buys {b} more. How many apples does {n} have now?",
        "apples = {a}\nbought = {b}\nans = apples + bought",
        lambda a, b: a + b,
    ),
    (
        "{n} had {a} marbles and lost {b} of them. How many marbles are left?",
        "marbles = {a}\nlost = {b}\nans = marbles - lost",
        lambda a, b: a - b,
    ),
    (
        "Each box holds {a} pens. How many pens are in {b} boxes?",
        "per_box = {a}\nboxes = {b}\nans = per_box * boxes",
        lambda a, b: a * b,
    ),
    (
        "{n} shares {a} cookies equally among {b} friends. How many cookies does each get?",
        "cookies = {a}\nfriends = {b}\nans = cookies / friends",
        lambda a, b: a / b,
    ),
]
NAMES = ["Tom", "Ana", "Raj", "Mia"]


def make_examples(n: int, offset: int = 0) -> list[Example]:
    """`n` problems whose programs compute the right answer (verified rationales)."""
    out = []
    for i in range(offset, offset + n):
        question, program, solve = TEMPLATES[i % 4]
        a, b = 12 + 7 * i, 2 + i % 5
        if i % 4 == 3:
            a = b * (3 + i)  # divides evenly
        problem = Problem.create(question.format(n=NAMES[(i // 4) % 4], a=a, b=b), solve(a, b))
        rationale = Rationale(
            problem_id=problem.id,
            program=program.format(a=a, b=b),
            answer=solve(a, b),
            teacher="test",
            prompt_version="test",
        )
        out.append(Example.join(problem, rationale))
    return out


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The test machines have 2 cores shared by parallel jobs; tiny models train several
    # times faster on one thread than on two contended ones.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def greedy_programs(model, tokenizer, questions, max_new_tokens=48) -> list[str]:
    prompts = [student_prompt(q) for q in questions]
    if model.config.is_encoder_decoder:
        tokenizer.padding_side = "right"
        enc = tokenizer(prompts, return_tensors="pt", padding=True)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    else:
        tokenizer.padding_side = "left"
        enc = tokenizer(prompts, return_tensors="pt", padding=True)
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        out = out[:, enc["input_ids"].shape[1] :]
    return [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]


def state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_and_snapshot(model_dir, cfg: TrainingConfig, out_dir, snaps: dict, name: str) -> dict:
    """Train on `make_examples(8)` on the CPU; `snaps[name]` gets the model's state after
    each step (so the last step's at the end). Returns the saved meta.json."""
    train_student(
        make_examples(8),
        str(model_dir),
        cfg,
        out_dir,
        device="cpu",
        on_step=lambda s: snaps.__setitem__(name, state(s.model)),
    )
    return json.loads((out_dir / "meta.json").read_text())


@pytest.fixture(scope="module")
def tokenizer(tiny_causal_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_causal_dir)


# --------------------------------------------------------------------------- units


def test_plan_batches_covers_every_example_once_and_depends_only_on_seed():
    lengths = [5 + (i * 37) % 90 for i in range(203)]
    plan = plan_batches(lengths, 8, seed=3, epoch=0, group_by_length=True)
    assert sorted(i for b in plan for i in b) == list(range(203))
    assert plan == plan_batches(lengths, 8, seed=3, epoch=0, group_by_length=True)
    assert plan != plan_batches(lengths, 8, seed=3, epoch=1, group_by_length=True)
    assert plan != plan_batches(lengths, 8, seed=4, epoch=0, group_by_length=True)
    flat = plan_batches(lengths, 8, seed=3, epoch=0, group_by_length=False)
    assert sorted(i for b in flat for i in b) == list(range(203))

    def padded(batches):
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    # Grouping by length must cut padding a lot against random batches.
    assert padded(plan) < 0.6 * padded(flat)
    # The most expensive batch comes first (an out-of-memory shows at step 1).
    costs = [max(lengths[i] for i in b) * len(b) for b in plan]
    assert costs[0] == max(costs)


def test_encode_masks_the_prompt_and_ends_the_program_with_eos(tokenizer):
    ex = make_examples(2)
    enc, truncated = encode_examples(ex, tokenizer, seq2seq=False, max_seq_len=512)
    assert truncated == 0
    for e, x in zip(enc, ex):
        prompt = tokenizer(student_prompt(x.question))["input_ids"]
        program = tokenizer(x.program, add_special_tokens=False)["input_ids"]
        assert list(e.input_ids) == prompt + program + [tokenizer.eos_token_id]
        assert list(e.labels) == [IGNORE_INDEX] * len(prompt) + program + [tokenizer.eos_token_id]
        assert e.n_targets == len(program) + 1


def test_encode_truncates_the_program_and_keeps_the_prompt(tokenizer):
    ex = make_examples(1)
    prompt_len = len(tokenizer(student_prompt(ex[0].question))["input_ids"])
    enc, truncated = encode_examples(ex, tokenizer, seq2seq=False, max_seq_len=prompt_len + 3)
    assert truncated == 1
    assert len(enc[0].input_ids) == prompt_len + 3
    assert enc[0].labels[:prompt_len] == (IGNORE_INDEX,) * prompt_len
    s2s, _ = encode_examples(ex, tokenizer, seq2seq=True, max_seq_len=512)
    assert list(s2s[0].input_ids) == tokenizer(student_prompt(ex[0].question))["input_ids"]
    assert s2s[0].labels[-1] == tokenizer.eos_token_id and IGNORE_INDEX not in s2s[0].labels


def test_collate_pads_to_the_batch_not_the_dataset():
    a = Encoded((1, 2, 3), (IGNORE_INDEX, 2, 3))
    b = Encoded((4, 5), (IGNORE_INDEX, 5))
    out = collate([a, b], pad_id=0)
    assert out["input_ids"].tolist() == [[1, 2, 3], [4, 5, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert out["labels"].tolist() == [[IGNORE_INDEX, 2, 3], [IGNORE_INDEX, 5, IGNORE_INDEX]]
    assert collate([a, b], pad_id=0, pad_to=6)["input_ids"].shape == (2, 6)


def test_target_loss_counts_only_program_tokens_and_ignores_padding(
    tiny_causal_dir, tokenizer, monkeypatch
):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir).eval()
    enc, _ = encode_examples(make_examples(3), tokenizer, seq2seq=False, max_seq_len=512)
    with torch.no_grad():
        batch = collate(enc, tokenizer.pad_token_id)
        assert modeling._takes_logits_to_keep(model)
        got = modeling._target_loss(model, batch, seq2seq=False)
        # Models without `logits_to_keep` compute every position and select the targets.
        monkeypatch.setattr(modeling, "_takes_logits_to_keep", lambda m: False)
        got_full = modeling._target_loss(model, batch, seq2seq=False)
        # Reference: full logits, shifted by hand, per example without any padding.
        want = 0.0
        for e in enc:
            ids = torch.tensor([e.input_ids])
            logits = model(input_ids=ids).logits[0, :-1]
            target = torch.tensor(e.labels[1:])
            keep = target != IGNORE_INDEX
            want += torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum")
    assert torch.allclose(got, want, rtol=1e-4), (got, want)
    assert torch.allclose(got_full, want, rtol=1e-4), (got_full, want)


def test_config_hash_is_stable_and_sees_every_field():
    cfg = TrainingConfig()
    assert training_config_hash(cfg) == training_config_hash(TrainingConfig())
    assert training_config_hash(cfg) != training_config_hash(TrainingConfig(learning_rate=1e-3))
    assert training_config_hash(cfg) != training_config_hash(TrainingConfig(lora_r=8))


def test_student_model_config_maps_lora_and_full():
    base = StudentConfig(model="smollm2-135m-instruct", batch_size=4)
    lora = student_model_config(ModelRef(path="/m/a", base_model="base-x", adapter=True), base)
    assert (lora.model, lora.adapter, lora.batch_size) == ("base-x", "/m/a", 4)
    assert isinstance(lora, StudentConfig)
    full = student_model_config(ModelRef(path="/m/f", base_model="base-x"), ModelConfig())
    assert (full.model, full.adapter) == ("/m/f", None)


def test_read_model_ref_explains_a_folder_that_is_not_a_student(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a trained student"):
        read_model_ref(tmp_path)


def test_train_rejects_no_examples(tmp_path, tiny_causal_dir):
    with pytest.raises(ValueError, match="at least one example"):
        train_student([], str(tiny_causal_dir), TrainingConfig(), tmp_path / "m", device="cpu")


# --------------------------------------------------------------------------- real runs


def _full(**kw) -> TrainingConfig:
    return TrainingConfig(method="full", warmup_ratio=0.0, **kw)


@pytest.mark.slow
def test_tiny_causal_model_learns_to_write_the_programs(tmp_path, tiny_causal_dir):
    ex = make_examples(8)
    cfg = _full(max_steps=100, learning_rate=5e-3, batch_size=8)
    ref = train_student(ex, str(tiny_causal_dir), cfg, tmp_path / "student", device="cpu")
    model, tok = load_student(ref)
    got = greedy_programs(model, tok, [e.question for e in ex])
    matches = sum(g == e.program for g, e in zip(got, ex))
    assert matches >= 6, list(zip(got, [e.program for e in ex]))
    meta = json.loads((tmp_path / "student" / "meta.json").read_text())
    assert meta["loss_history"]["last"] < meta["loss_history"]["first"] / 10


@pytest.mark.slow
def test_tiny_encoder_decoder_learns_to_write_the_programs(tmp_path, tiny_seq2seq_dir):
    ex = make_examples(8)
    cfg = _full(max_steps=150, learning_rate=1e-2, batch_size=4)
    ref = train_student(ex, str(tiny_seq2seq_dir), cfg, tmp_path / "student", device="cpu")
    model, tok = load_student(ref)
    assert model.config.is_encoder_decoder
    got = greedy_programs(model, tok, [e.question for e in ex])
    matches = sum(g == e.program for g, e in zip(got, ex))
    assert matches >= 6, list(zip(got, [e.program for e in ex]))
    assert json.loads((tmp_path / "student" / "meta.json").read_text())["architecture"] == "seq2seq"


def test_lora_changes_only_adapter_weights(tmp_path, tiny_causal_dir):
    from transformers import AutoModelForCausalLM

    before = state(AutoModelForCausalLM.from_pretrained(tiny_causal_dir))
    trained = {}

    def keep_last(s):
        if s.step == s.total_steps:
            trained.update(state(s.model))

    cfg = TrainingConfig(
        method="lora",
        lora_r=4,
        max_steps=4,
        learning_rate=1e-2,
        batch_size=4,
        lora_target_modules=["q_proj", "v_proj"],
    )
    ref = train_student(
        make_examples(8), str(tiny_causal_dir), cfg, tmp_path / "a", device="cpu", on_step=keep_last
    )
    assert ref.adapter and ref.base_model == str(tiny_causal_dir)
    base = {
        k.replace("base_model.model.", "").replace(".base_layer", ""): v
        for k, v in trained.items()
        if "lora_" not in k
    }
    assert base.keys() == before.keys()
    for name, value in before.items():
        assert torch.equal(base[name], value), f"base weight {name} changed under LoRA"
    lora_b = [v for k, v in trained.items() if "lora_B" in k]
    assert len(lora_b) == 4 and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero
    # The folder holds an adapter, not a model, and it loads back on top of the base.
    assert (tmp_path / "a" / "adapter_config.json").is_file()
    assert not (tmp_path / "a" / "model.safetensors").exists()
    model, _ = load_student(tmp_path / "a")
    loaded = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    assert all(torch.equal(loaded[k], trained[k]) for k in loaded) and loaded


def test_same_seed_same_loss_curve_and_weights_other_seed_differs(tmp_path, tiny_causal_dir):
    def run(name, seed):
        snap = {}
        cfg = TrainingConfig(
            method="lora",
            lora_r=4,
            max_steps=5,
            batch_size=3,
            seed=seed,
            learning_rate=5e-3,
            lora_dropout=0.1,
        )
        train_student(
            make_examples(9),
            str(tiny_causal_dir),
            cfg,
            tmp_path / name,
            device="cpu",
            on_step=lambda s: snap.update(state(s.model)) if s.step == 5 else None,
        )
        meta = json.loads((tmp_path / name / "meta.json").read_text())
        return [p[1] for p in meta["loss_history"]["points"]], snap

    loss_a, w_a = run("a", 0)
    loss_b, w_b = run("b", 0)
    loss_c, w_c = run("c", 1)
    assert len(loss_a) == 5 and loss_a == loss_b
    assert all(torch.equal(w_a[k], w_b[k]) for k in w_a)
    assert loss_a != loss_c and any(not torch.equal(w_a[k], w_c[k]) for k in w_a)


def test_gradient_accumulation_matches_one_big_batch(tmp_path, tiny_causal_dir):
    # The loss is a mean over target tokens of the whole step, whatever the micro-batches.
    snaps = {}

    def run(name, batch, accum):
        cfg = _full(max_steps=1, batch_size=batch, grad_accum=accum, group_by_length=False)
        return train_and_snapshot(tiny_causal_dir, cfg, tmp_path / name, snaps, name)["final_loss"]

    one, accumulated = run("one", 8, 1), run("acc", 2, 4)
    assert math.isclose(one, accumulated, rel_tol=1e-5)
    for k, v in snaps["one"].items():
        assert torch.allclose(v, snaps["acc"][k], atol=1e-6), k


def test_meta_json_says_what_made_the_model(tmp_path, tiny_causal_dir):
    cfg = _full(max_steps=3, batch_size=4)
    ref = train_student(
        make_examples(6),
        str(tiny_causal_dir),
        cfg,
        tmp_path / "m",
        dataset_version="ds-123",
        device="cpu",
    )
    assert ref == ModelRef(
        path=str(tmp_path / "m"),
        base_model=str(tiny_causal_dir),
        dataset_version="ds-123",
        adapter=False,
    )
    assert read_model_ref(tmp_path / "m") == ref
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["training_config_hash"] == training_config_hash(cfg)
    assert meta["base_path"] == str(tiny_causal_dir) and meta["method"] == "full"
    # 6 examples in batches of 4 and 2: steps 1-2 are epoch one, step 3 starts epoch two.
    assert meta["steps"] == 3 and meta["n_examples"] == 6 and meta["epochs"] == 1.5
    enc, _ = encode_examples(make_examples(6), load_student(ref)[1], seq2seq=False, max_seq_len=512)
    lengths = [e.length for e in enc]
    second = plan_batches(lengths, 4, seed=0, epoch=1, group_by_length=True)
    assert meta["tokens_seen"] == sum(lengths) + sum(lengths[i] for i in second[0])
    assert meta["target_tokens"] <= meta["tokens_seen"] <= meta["padded_tokens"]
    assert meta["final_loss"] == meta["loss_history"]["last"] and meta["wall_time_s"] > 0
    assert (tmp_path / "m" / "model.safetensors").is_file()
    assert (tmp_path / "m" / "tokenizer.json").is_file()


def test_a_crash_mid_training_leaves_nothing_that_looks_complete(tmp_path, tiny_causal_dir):
    class Boom(RuntimeError):
        pass

    def crash(s):
        if s.step == 2:
            raise Boom("simulated crash")

    cfg = _full(max_steps=4, batch_size=2)
    with pytest.raises(Boom):
        train_student(
            make_examples(6), str(tiny_causal_dir), cfg, tmp_path / "m", device="cpu", on_step=crash
        )
    assert not (tmp_path / "m").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left behind either

    # A complete earlier model survives a crashed retrain untouched.
    train_student(
        make_examples(6),
        str(tiny_causal_dir),
        _full(max_steps=1, batch_size=2),
        tmp_path / "m",
        device="cpu",
    )
    first = (tmp_path / "m" / "meta.json").read_text()
    with pytest.raises(Boom):
        train_student(
            make_examples(6), str(tiny_causal_dir), cfg, tmp_path / "m", device="cpu", on_step=crash
        )
    assert (tmp_path / "m" / "meta.json").read_text() == first
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_a_crash_while_saving_leaves_no_folder(tmp_path, tiny_causal_dir, monkeypatch):
    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(student, "_fsync_tree", fail)
    with pytest.raises(OSError, match="disk full"):
        train_student(
            make_examples(4),
            str(tiny_causal_dir),
            _full(max_steps=1, batch_size=4),
            tmp_path / "m",
            device="cpu",
        )
    assert list(tmp_path.iterdir()) == []


def test_bf16_and_gradient_checkpointing_paths_run_when_asked(tmp_path, tiny_causal_dir):
    # "auto" turns both on only with CUDA; "on" forces them (here on CPU) and meta says so.
    cfg = TrainingConfig(
        method="lora",
        lora_r=4,
        max_steps=2,
        batch_size=4,
        bf16="on",
        gradient_checkpointing="on",
        learning_rate=1e-2,
    )
    train_student(make_examples(4), str(tiny_causal_dir), cfg, tmp_path / "m", device="cpu")
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["bf16"] is True and meta["gradient_checkpointing"] is True
    assert all(math.isfinite(p[1]) for p in meta["loss_history"]["points"])
    auto = TrainingConfig(method="lora", lora_r=4, max_steps=1, batch_size=4)
    train_student(make_examples(4), str(tiny_causal_dir), auto, tmp_path / "a", device="cpu")
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["bf16"] is False and meta["gradient_checkpointing"] is False


@pytest.mark.slow
def test_embedded_model_lora_loss_falls(tmp_path, embedded_model_dir):
    ex = make_examples(4)
    cfg = TrainingConfig(
        method="lora",
        max_steps=6,
        batch_size=4,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        lora_dropout=0.0,
    )
    ref = train_student(ex, "smollm2-135m-instruct", cfg, tmp_path / "lora", device="cpu")
    assert ref.adapter and ref.base_model == "smollm2-135m-instruct"
    meta = json.loads((tmp_path / "lora" / "meta.json").read_text())
    losses = [p[1] for p in meta["loss_history"]["points"]]
    assert len(losses) == 6
    assert losses[-1] < 0.8 * losses[0], losses
    assert meta["base_path"] == str(embedded_model_dir)
