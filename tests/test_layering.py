"""fdd_core must stay usable without Prefect: data flows config -> flows -> tasks -> core."""

import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "fdd_core"
FORBIDDEN = ("prefect", "flows", "tasks", "deployments", "fdd")


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_sources_never_import_prefect_or_upper_layers():
    offenders = {}
    for path in sorted(CORE.rglob("*.py")):
        bad = _imported_roots(path) & set(FORBIDDEN)
        if bad:
            offenders[str(path.relative_to(CORE.parent))] = sorted(bad)
    assert offenders == {}, f"fdd_core imports upper layers: {offenders}"


def test_importing_every_core_module_loads_no_prefect():
    modules = sorted(
        ".".join(p.relative_to(CORE.parent).with_suffix("").parts).removesuffix(".__init__")
        for p in CORE.rglob("*.py")
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except ImportError as e:\n"
        "        if 'prefect' in str(e): raise\n"
        "bad = sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.'))\n"
        "assert not bad, bad[:5]\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
