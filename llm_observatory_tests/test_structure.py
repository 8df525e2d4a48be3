"""The package's shape, held: imports point one way (README's "Project layout"), and no module
imports another of the package inside a function (the way a cycle is hidden)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "llm_observatory"

# Higher levels may import lower ones and their own; never the other way.
LEVELS = {
    "cli": 6,
    "definitions": 6,
    "automation": 5,
    "assets": 5,
    "operate": 5,
    "checks": 4,
    "report": 4,
    "plan": 4,
    "transform": 3,
    "incremental": 3,
    "io": 3,
    "reconcile": 3,
    "traffic": 3,
    "synthetic": 3,
    "sql_scripts": 2,
    "resources": 2,
    "settings": 2,
    "layout": 2,
    "fingerprint": 2,
    "quality": 2,
    "executors": 1,
    "partitions": 0,
    "native_memory": 0,
    "tables": 0,
    "__init__": 0,
}
# The command line imports what each command needs when it runs: it starts fast and sets
# DAGSTER_HOME before Dagster loads. (Libraries outside the package may be imported late
# anywhere: the Azure SDK where a lake is on Azure, an optional extra, pyarrow after the
# allocator is chosen.)
LAZY_ALLOWED_FILES = {"cli.py"}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        yield relative, ast.parse(path.read_text())


def _level(module: str) -> int | None:
    parts = module.split(".")
    return LEVELS.get(parts[1] if len(parts) > 1 else "__init__")


def test_every_module_has_a_level():
    tops = {relative.parts[0].removesuffix(".py") for relative, _ in _modules()}
    assert tops <= set(LEVELS), f"give these a level: {sorted(tops - set(LEVELS))}"


def test_imports_point_one_way():
    upward = []
    for relative, tree in _modules():
        own = _level("llm_observatory." + ".".join(relative.with_suffix("").parts))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "llm_observatory."
            ):
                target = _level(node.module)
                if own is not None and target is not None and target > own:
                    upward.append(f"{relative}:{node.lineno} imports {node.module}")
    assert upward == []


def test_no_module_of_the_package_is_imported_inside_a_function():
    inner = []
    for relative, tree in _modules():
        if str(relative) in LAZY_ALLOWED_FILES:
            continue
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                else:
                    continue
                for name in names:
                    if name.startswith("llm_observatory"):
                        inner.append(f"{relative}:{node.lineno} {function.name} imports {name}")
    assert inner == []
