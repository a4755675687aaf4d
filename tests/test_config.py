import pytest

from fdd_core.config import ConfigError, RunConfig, dump_config, load_config, parse_override


def _write(tmp_path, text):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_defaults_validate_and_every_field_is_documented():
    cfg = RunConfig()
    assert cfg.teacher.model == "smollm2-135m-instruct"

    def walk(model_cls, prefix=""):
        for name, field in model_cls.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann, prefix + name + ".")
                continue
            assert field.description, f"{prefix}{name} has no description"
            for member in getattr(ann, "__args__", ()):  # teacher/student: one per backend
                cls = getattr(member, "__origin__", member)
                if isinstance(cls, type) and hasattr(cls, "model_fields"):
                    walk(cls, f"{prefix}{name}[{cls.__name__}].")

    walk(RunConfig)


def test_yaml_and_overrides(tmp_path):
    p = _write(tmp_path, "teacher:\n  n_samples: 3\nrounds:\n  n_rounds: 1\n")
    cfg = load_config(p, ["teacher.n_samples=8", "filtering.ngram_n=9"])
    assert cfg.teacher.n_samples == 8
    assert cfg.rounds.n_rounds == 1
    assert cfg.filtering.ngram_n == 9


def test_unknown_field_names_field_and_allowed_keys(tmp_path):
    p = _write(tmp_path, "teacher:\n  n_sample: 3\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    msg = str(ei.value)
    assert "teacher.n_sample" in msg and "unknown field" in msg
    assert "n_samples" in msg  # the allowed keys are listed
    assert str(p) in msg


def test_bad_value_names_field_value_and_range(tmp_path):
    p = _write(tmp_path, "teacher:\n  top_p: 1.5\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    msg = str(ei.value)
    assert "teacher.top_p" in msg and "1.5" in msg and "less than or equal to 1" in msg


def test_bad_literal_lists_choices():
    with pytest.raises(ConfigError) as ei:
        load_config(None, ["teacher.backend=tgi"])
    msg = str(ei.value)
    assert "teacher.backend" in msg and "'tgi'" in msg and "'openai'" in msg


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="base_url"):
        load_config(None, ["teacher.backend=openai"])
    with pytest.raises(ConfigError, match="greedy"):
        load_config(None, ["teacher.temperature=0"])
    with pytest.raises(ConfigError, match="max_rationales"):
        load_config(None, ["labeling.n_programs=2", "labeling.max_rationales=3"])


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    p = _write(tmp_path, "teacher: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    p = _write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)


def test_override_syntax():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a.b=[x, y]") == ("a.b", ["x", "y"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("teacher.n_samples")


def test_dump_roundtrip_and_hash_is_stable(tmp_path):
    cfg = load_config(None, ["teacher.seed=7"])
    p = _write(tmp_path, dump_config(cfg))
    again = load_config(p)
    assert again == cfg
    assert again.config_hash() == cfg.config_hash()
    assert load_config(None).config_hash() != cfg.config_hash()


def test_every_shipped_config_loads_unchanged():
    """configs/*.yaml and the configs inline in deployments/prefect.yaml all validate, and
    dumping then reloading gives the same config (and the same hash)."""
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parent.parent
    files = sorted((repo / "configs").glob("*.yaml"))
    assert files, "no configs/*.yaml found"
    trees = {str(f): yaml.safe_load(f.read_text()) for f in files}
    prefect = yaml.safe_load((repo / "deployments" / "prefect.yaml").read_text())
    for name, tree in prefect["definitions"]["configs"].items():
        trees[f"prefect.yaml:{name}"] = tree
    for d in prefect["deployments"]:
        if "config" in d.get("parameters", {}):
            trees[f"prefect.yaml:{d['name']}"] = d["parameters"]["config"]
    assert len(trees) >= 4
    from fdd_core.config import config_from_dict

    for source, tree in trees.items():
        cfg = config_from_dict(tree, source=source)
        again = (
            load_config(None) if not tree else config_from_dict(yaml.safe_load(dump_config(cfg)))
        )
        assert again == cfg and again.config_hash() == cfg.config_hash(), source
        for who in ("teacher", "student"):  # every key given is kept, none is dropped
            for key, value in (tree.get(who) or {}).items():
                assert getattr(getattr(cfg, who), key) == value, f"{source}: {who}.{key}"


def test_config_hash_keeps_the_flat_model_config_shape():
    """The hash sees teacher/student with every field of the former flat ModelConfig, so
    run folder names derived from it did not change when configs were split per backend."""
    from fdd_core.config import _FLAT_MODEL_DEFAULTS

    flat = {
        "model", "adapter", "device", "dtype", "batch_size", "base_url", "api_key_env",
        "endpoint", "max_concurrency", "request_timeout_s", "max_retries",
        "gpu_memory_utilization", "tensor_parallel_size",
    }  # fmt: skip
    assert set(_FLAT_MODEL_DEFAULTS) == flat
    a = RunConfig()
    b = load_config(None, ["teacher.batch_size=8"])
    assert a.config_hash() != b.config_hash()


def test_shard_time_limit_changes_no_config_hash_and_so_no_run_folder():
    """orchestration.shard_timeout_s says how long to wait, not what to compute: it is out
    of the hash (and of the task cache keys), so adding the field kept every run folder
    name, and changing it neither starts a new run folder nor recomputes anything."""
    base = load_config(None)
    changed = load_config(None, ["orchestration.shard_timeout_s=5"])
    off = load_config(None, ["orchestration.shard_timeout_s=null"])
    assert changed.orchestration.shard_timeout_s == 5 and off.orchestration.shard_timeout_s is None
    assert base.config_hash() == changed.config_hash() == off.config_hash()
    assert base.config_hash() != load_config(None, ["orchestration.shard_size=7"]).config_hash()
    with pytest.raises(ConfigError, match="shard_timeout_s"):
        load_config(None, ["orchestration.shard_timeout_s=0"])


def test_field_of_another_backend_names_that_backend():
    with pytest.raises(
        ConfigError, match="base_url applies to backend 'openai', not to backend 'hf'"
    ):
        load_config(None, ["teacher.base_url=http://127.0.0.1:8000/v1"])
    with pytest.raises(ConfigError, match="device applies to backends 'hf', 'vllm'"):
        load_config(
            None, ["student.backend=openai", "student.base_url=http://h/v1", "student.device=cpu"]
        )
    cfg = load_config(None, ["teacher.backend=openai", "teacher.base_url=http://h/v1"])
    assert type(cfg.teacher).__name__ == "OpenAITeacherConfig" and not hasattr(
        cfg.teacher, "device"
    )
