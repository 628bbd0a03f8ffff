"""The floors of the house, read from the import statements (function-level imports included),
and the ground they stand on, read from the source.

labkit (the neutral kit) depends on nothing of ours; datamodules only on labkit; the models
(lightning_modules) and reduction on data and labkit, never on each other; nothing under them
imports the scripts' command-line kit. No floor, and no script, uses a private torch, Lightning
or argparse attribute or changes the process's environment (but one documented setting).
"""

from __future__ import annotations

import ast
import re

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


# Private torch, Lightning and argparse internals, and changes to the process's environment.
PRIVATE_OR_PROCESS_WIDE = re.compile(r"torch\._[a-z]|_batches_that_stepped|__setattr__|_negative_number_matcher|os\.environ\.pop|os\.environ\[")
ALLOWED_LINES = (
    # Python's documented way to set a field of a frozen dataclass in __post_init__.
    re.compile(r"\bobject\.__setattr__\(self, "),
    # The MLP scripts' documented entry-point setting (cli_kit.prefer_cuda_runtime_check).
    re.compile(r"^\s+os\.environ\.pop\(NVML_CHECK_VARIABLE, None\)$"),
)


def test_library_and_scripts_stand_on_public_ground():
    found = [
        f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
        for package in [*ALLOWED, "scripts"]
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if PRIVATE_OR_PROCESS_WIDE.search(line) and not any(allowed.search(line) for allowed in ALLOWED_LINES)
    ]
    assert not found
