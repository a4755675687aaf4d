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
            else:
                assert field.description, f"{prefix}{name} has no description"

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
