"""The package's rooms keep to themselves: which parts of movakit may import which (read from the source, not run).

The model classes are pure PyTorch: loading builds them, never the reverse, and they know nothing of the runtime.
Production code never imports the test kit (movakit.testing).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "movakit"


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _offenders(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [f"{path.relative_to(PACKAGE.parent)}: {name}" for path in sorted(files)
            for name in sorted(_imports(path)) if name.startswith(forbidden)]


def test_models_import_neither_loading_nor_runtime():
    forbidden = ("movakit.loading", "movakit.runtime", "movakit.services", "movakit.stages", "movakit.pipeline")
    assert _offenders(list((PACKAGE / "models").rglob("*.py")), forbidden) == []


def test_production_code_does_not_import_the_test_kit():
    production = [p for p in PACKAGE.rglob("*.py") if "testing" not in p.relative_to(PACKAGE).parts]
    assert len(production) > 50 and _offenders(production, ("movakit.testing",)) == []
