"""Layering, read from the source (not from what happens to be imported): only
``candleflow/cli/`` may import ``prefect``, ``flows`` or ``tasks`` — anywhere in a file, lazily
inside a function too."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "candleflow"
FORBIDDEN = ("prefect", "flows", "tasks")


def forbidden_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import of a forbidden top-level package in ``source``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.split(".")[0] in FORBIDDEN]
    return found


def test_the_checker_finds_top_level_and_lazy_imports() -> None:
    source = (
        "import prefect\ndef f():\n    from tasks.progress import x\n    import flows.load_data\n"
    )
    assert forbidden_imports(source) == [
        (1, "prefect"),
        (3, "tasks.progress"),
        (4, "flows.load_data"),
    ]
    assert forbidden_imports("from candleflow.tasks_like import x\nimport prefectural\n") == []


def test_only_the_cli_package_imports_prefect_flows_or_tasks() -> None:
    offenders = {
        str(path.relative_to(CORE.parent)): found
        for path in sorted(CORE.rglob("*.py"))
        if "cli" not in path.relative_to(CORE).parts[:1]
        and (found := forbidden_imports(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}
    assert len(list(CORE.rglob("*.py"))) > 20, "the core moved? the walk found too few modules"
