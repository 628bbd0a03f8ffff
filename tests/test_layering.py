"""The floors of the house, read from the import statements (function-level imports included).

labkit (the neutral kit) depends on nothing of ours; datamodules only on labkit; the models
(lightning_modules) and reduction on data and labkit, never on each other; nothing under them
imports the scripts' command-line kit.
"""

from __future__ import annotations

import ast

import pytest
from conftest import REPO_ROOT

OURS = {"labkit", "datamodules", "lightning_modules", "reduction", "whole_study", "cli_kit", "scripts"}
ALLOWED = {
    "labkit": {"labkit"},
    "datamodules": {"labkit", "datamodules"},
    "lightning_modules": {"labkit", "datamodules", "lightning_modules"},
    "reduction": {"labkit", "datamodules", "reduction"},
    "whole_study": {"labkit", "datamodules", "lightning_modules", "reduction", "whole_study"},
}


def imported_packages(path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_floor_imports_only_what_is_below_it(package):
    wrong = {
        str(path.relative_to(REPO_ROOT)): sorted(imported_packages(path) - ALLOWED[package])
        for path in (REPO_ROOT / package).rglob("*.py")
    }
    assert not {path: names for path, names in wrong.items() if names}


def test_the_checker_sees_function_level_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from cli_kit import run_main\n    import reduction.backend\n")
    assert imported_packages(module) == {"cli_kit", "reduction"}
