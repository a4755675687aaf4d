"""Loading a `RunConfig` from YAML plus `--set` overrides, with errors a user can act on:
every problem becomes a `ConfigError` naming the field, the value it got and what is allowed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from fdd_core.backends import registry
from fdd_core.config.sections import ConfigError, ModelConfig, RunConfig


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        parts, parent = _walk_loc(e["loc"])
        loc = ".".join(parts) or "(top level)"
        value = e.get("input")
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            lines.append(f"  - {loc}: {_unknown_field_message(parts[-1], parent)}")
            continue
        if e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        if e["type"] == "literal_error":
            ctx = e.get("ctx", {})
            msg = f"must be one of {ctx.get('expected', '?')}"
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):  # an unknown backend
            loc = f"{loc}.backend"
            shown = repr(value.get("backend")) if isinstance(value, dict) else shown
            msg = f"must be one of {', '.join(repr(n) for n in registry.backend_names())}"
        lines.append(f"  - {loc} = {shown}: {msg}")
    return "\n".join(lines)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The model classes an annotation holds (through Annotated, unions, list, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()) or ():
        found += _models_in(arg)
    origin = getattr(annotation, "__origin__", None)  # Annotated[X, ...] keeps X here
    if origin is not None and not found:
        found += _models_in(origin)
    return found


def _walk_loc(loc: tuple) -> tuple[list[str], type[BaseModel] | None]:
    """The user's dotted path for a pydantic error location (list indices kept, the
    discriminated union's backend tags dropped) and the model holding its last part."""
    parts: list[str] = []
    model: type[BaseModel] | None = RunConfig
    parent: type[BaseModel] | None = RunConfig
    i = 0
    while i < len(loc):
        part = loc[i]
        i += 1
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [str(part)]
            continue
        parts.append(str(part))
        parent = model
        field = getattr(model, "model_fields", {}).get(part) if model is not None else None
        members = _models_in(field.annotation) if field is not None else []
        if len(members) > 1 and i < len(loc):  # a union: the next part is the tag taken
            tagged = [m for m in members if _backend_default(m) == loc[i]]
            if tagged:
                i += 1
                members = tagged
        model = members[0] if len(members) == 1 else None
    return parts, parent


def _backend_default(model: type[BaseModel]) -> Any:
    field = model.model_fields.get("backend")
    return field.default if field is not None else None


def _unknown_field_message(name: str, parent: type[BaseModel] | None) -> str:
    allowed = sorted(getattr(parent, "model_fields", {})) if parent is not None else []
    if parent is not None and issubclass(parent, ModelConfig):
        backend = _backend_default(parent)
        takers = [
            n for n in registry.backend_names() if name in registry.config_class(n).model_fields
        ]
        if takers:
            which = ", ".join(repr(n) for n in takers)
            noun = "backend" if len(takers) == 1 else "backends"
            return (
                f"{name} applies to {noun} {which}, not to backend {backend!r}; fields for "
                f"{backend!r} here: {', '.join(allowed)}"
            )
        return f"unknown field for backend {backend!r}; allowed here: {', '.join(allowed)}"
    return "unknown field" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: '{part}' is not a section")
        node = nxt
    node[parts[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """`a.b=c` -> ("a.b", yaml-parsed c). `a.b=` sets an empty string."""
    if "=" not in item:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. teacher.n_samples=8), got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"--set: bad key {key!r} in {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def config_from_dict(
    data: dict, overrides: list[str] | tuple[str, ...] = (), *, source: str = "<dict>"
) -> RunConfig:
    tree = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(tree, key, value)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        where = source + (f" (with --set {' '.join(overrides)})" if overrides else "")
        raise ConfigError(_format_validation_error(err, where)) from None


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML config (None: all defaults), apply `--set` overrides and validate."""
    data: Any = {}
    source = "<defaults>"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"{p}: not valid YAML{where}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(
                f"{p}: the top level must be a mapping of sections, got {type(data).__name__}"
            )
    return config_from_dict(data, overrides, source=source)


def dump_config(cfg: RunConfig) -> str:
    """YAML text of a config (never holds secrets: keys live in the environment)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
