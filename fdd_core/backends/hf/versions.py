"""The transformers versions the hf backend supports, checked when it is imported.

`kv_cache` subclasses `transformers.cache_utils.DynamicLayer` (its lazy initialisation on
the first `update`, and its `keys`/`values` attributes), `cascade` registers an attention
function with `AttentionInterface`/`AttentionMaskInterface`, and every forward passes the
cache as `cache=` (the name transformers 5.x moved to from `past_key_values`, which it
drops in 5.40). Those are internals, so the range is the one tested here (5.24) up to the
next major; keep it in step with `transformers` in pyproject.toml.
"""

from __future__ import annotations

SUPPORTED = (">=5.24", "<6")  # also in pyproject.toml (extra 'train')
_LOW, _HIGH = (5, 24), (6, 0)


def _parse(version: str) -> tuple[int, int]:
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit()) or "0"
        parts.append(int(digits))
    while len(parts) < 2:
        parts.append(0)
    return parts[0], parts[1]


def check_transformers(version: str | None = None) -> None:
    """Raise ImportError naming the installed and the supported versions when outside
    the range; do nothing when transformers is absent (its use raises the install hint)."""
    if version is None:
        try:
            from importlib.metadata import PackageNotFoundError
            from importlib.metadata import version as dist_version

            version = dist_version("transformers")
        except PackageNotFoundError:
            return
    if not _LOW <= _parse(version) < _HIGH:
        raise ImportError(
            f"the 'hf' backend supports transformers {','.join(SUPPORTED)} (it relies on "
            f"DynamicLayer, AttentionInterface and the `cache=` argument); transformers "
            f"{version} is installed: pip install 'transformers{','.join(SUPPORTED)}'"
        )
