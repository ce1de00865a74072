"""The packages stand in layers, and every import points down: sdft_core (the method; its eval/ may use the rest of
sdft_core, never the reverse) <- tasks <- data_prep, experiments, teaching (the teaching notebooks' helpers). A module
that imports upwards fails here, with the file and line."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# What each package (or sub-package) may import from the kit's own packages.
ALLOWED = {
    "sdft_core": {"sdft_core"},
    "sdft_core.eval": {"sdft_core", "sdft_core.eval"},
    "tasks": {"sdft_core", "sdft_core.eval", "tasks"},
    "data_prep": {"sdft_core", "sdft_core.eval", "tasks", "data_prep"},
    "experiments": {"sdft_core", "sdft_core.eval", "tasks", "experiments"},
    "teaching": {"sdft_core", "sdft_core.eval", "tasks", "teaching"},
}
OWN = ("sdft_core", "tasks", "data_prep", "experiments", "teaching")


def layer(module: str) -> str:
    return "sdft_core.eval" if module.startswith("sdft_core.eval") else module.split(".")[0]


def imported_modules(path: Path) -> set[tuple[int, str]]:
    """(line, module) of every import in the file, at any depth; `from a import b` counts as a and as a.b, so that
    `from sdft_core import eval` is seen as an import of the eval layer."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {(node.lineno, node.module)} | {(node.lineno, f"{node.module}.{a.name}") for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {(node.lineno, alias.name) for alias in node.names}
    return found


def upward_imports(package: str, repo: Path = REPO) -> list[str]:
    found = []
    for path in sorted((repo / package).rglob("*.py")):
        allowed = ALLOWED[layer(".".join(path.relative_to(repo).with_suffix("").parts))]
        for line, module in sorted(imported_modules(path)):
            if module.split(".")[0] in OWN and layer(module) not in allowed:
                found.append(f"{path.relative_to(repo)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("package", OWN)
def test_imports_point_down_the_layers(package):
    assert upward_imports(package) == []


def test_an_upward_import_is_found(tmp_path):
    """The check itself can fail: a core module importing the task registry or the eval layer is reported."""
    (tmp_path / "sdft_core").mkdir()
    (tmp_path / "sdft_core" / "bad.py").write_text("import os\n\nfrom tasks.registry import load_task\n"
                                                   "from sdft_core import eval, io\n")
    assert upward_imports("sdft_core", tmp_path) == ["sdft_core/bad.py:3 imports tasks.registry",
                                                     "sdft_core/bad.py:3 imports tasks.registry.load_task",
                                                     "sdft_core/bad.py:4 imports sdft_core.eval"]
