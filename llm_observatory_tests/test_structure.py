"""The package's shape, held: imports point one way (README's "Project layout"), and no module
imports another of the package inside a function (the way a cycle is hidden)."""

import functools
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "llm_observatory"
PACKAGE_FILES = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py"))

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


# The modules' imports, read by a fresh interpreter: CPython 3.11's AST converter keeps one
# recursion counter for the whole process, which a long test session can leave unbalanced
# ("AST constructor recursion depth mismatch"); a child process starts clean.
_READ_IMPORTS = """
import ast, json, pathlib, sys
out = []
root = pathlib.Path(sys.argv[1])
for path in sorted(root.rglob("*.py")):
    tree = ast.parse(path.read_text())
    inner = set()
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    inner.add(id(node))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            out.append([str(path.relative_to(root)), node.lineno, name, id(node) in inner,
                        isinstance(node, ast.ImportFrom)])
print(json.dumps(out))
"""


@functools.cache
def _imports() -> list[tuple[str, int, str, bool, bool]]:
    """(file relative to the package, line, module imported, inside a function, a `from`
    import) for every import of the package."""
    read = subprocess.run(
        [sys.executable, "-c", _READ_IMPORTS, str(PACKAGE)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return [tuple(entry) for entry in json.loads(read.stdout)]


def _level(module: str) -> int | None:
    parts = module.split(".")
    return LEVELS.get(parts[1] if len(parts) > 1 else "__init__")


def test_every_module_has_a_level():
    tops = {Path(path).parts[0].removesuffix(".py") for path in PACKAGE_FILES}
    assert tops <= set(LEVELS), f"give these a level: {sorted(tops - set(LEVELS))}"


def test_imports_point_one_way():
    upward = []
    for path, line, module, _, is_from in _imports():
        if not (is_from and module.startswith("llm_observatory.")):
            continue
        own = _level("llm_observatory." + ".".join(Path(path).with_suffix("").parts))
        target = _level(module)
        if own is not None and target is not None and target > own:
            upward.append(f"{path}:{line} imports {module}")
    assert upward == []


def test_no_module_of_the_package_is_imported_inside_a_function():
    inner = [
        f"{path}:{line} imports {module}"
        for path, line, module, in_function, _ in _imports()
        if in_function and path not in LAZY_ALLOWED_FILES and module.startswith("llm_observatory")
    ]
    assert inner == []
