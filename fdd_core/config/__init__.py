"""The run configuration: one typed pydantic tree, loaded from YAML plus `--set` overrides.

Every field has a default and a description, every section forbids unknown keys, and
`load_config` turns any problem into a `ConfigError` naming the field, the value it got and
what is allowed, before any work starts.

Layout: `sections` (the pydantic models, `RunConfig`, `ConfigError`), `loading`
(`load_config`, `config_from_dict`, `parse_override`, `dump_config`). Import from
`fdd_core.config`; any other name of `sections` is reachable here too (module
`__getattr__`): the per-backend role classes the backend registry sets there
(`HFTeacherConfig`, ... which pickles name), `TeacherModels` / `StudentModels` as last rebuilt.
"""

from __future__ import annotations

from fdd_core.config import sections as _sections
from fdd_core.config.loading import config_from_dict, dump_config, load_config, parse_override
from fdd_core.config.sections import (
    EMBEDDED_MODEL,
    STRATEGIES,
    ConfigError,
    DataConfig,
    DataSource,
    EvaluationConfig,
    FilteringConfig,
    HFConfig,
    InProcessConfig,
    LabelingConfig,
    ModelConfig,
    OpenAIConfig,
    OrchestrationConfig,
    RoundsConfig,
    RunConfig,
    SandboxConfig,
    Section,
    StorageConfig,
    Strategy,
    StudentConfig,
    SynthesisConfig,
    TeacherConfig,
    TrainingConfig,
    VLLMConfig,
    rebuild_model_configs,
)

__all__ = [
    "ConfigError",
    "DataConfig",
    "DataSource",
    "EMBEDDED_MODEL",
    "EvaluationConfig",
    "FilteringConfig",
    "HFConfig",
    "InProcessConfig",
    "LabelingConfig",
    "ModelConfig",
    "OpenAIConfig",
    "OrchestrationConfig",
    "RoundsConfig",
    "RunConfig",
    "STRATEGIES",
    "SandboxConfig",
    "Section",
    "StorageConfig",
    "Strategy",
    "StudentConfig",
    "SynthesisConfig",
    "TeacherConfig",
    "TrainingConfig",
    "VLLMConfig",
    "config_from_dict",
    "dump_config",
    "load_config",
    "parse_override",
    "rebuild_model_configs",
]


def __getattr__(name: str):
    try:
        return getattr(_sections, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
