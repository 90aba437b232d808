"""The package layers: which packages a package may import (checked on the source, without importing it)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "diffuser"

# package → packages of diffuser it must never import
FORBIDDEN = {
    "diffusion": ("data", "envs", "training", "planning", "tasks", "tools", "runs", "build", "baselines"),
    "data": ("training", "planning", "tasks", "tools", "runs", "build"),
    "runs": ("data", "envs", "training", "planning", "tasks", "tools", "build"),
    "utils": ("data", "training", "planning", "tasks", "tools", "runs", "build"),
    "models": ("diffusion", "data", "envs", "training", "planning", "tasks", "tools", "runs", "baselines"),
    "planning": ("training", "tasks", "tools", "launch"),
    "training": ("planning", "tasks", "tools"),
    "tasks": ("tools",),  # the library imports none of its commands (train.py's Maze2D generator is data code)
    "envs": ("training", "planning", "tasks", "tools", "runs"),
    "baselines": ("data", "envs", "training", "planning", "tasks", "tools", "runs"),
}


def imported_packages(path: Path) -> set[str]:
    """The diffuser subpackages a file imports (diffuser.X.y → X), at any depth of the file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        out |= {name.split(".")[1] for name in names if name.startswith("diffuser.")}
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_lower_layers(package):
    for path in sorted((PACKAGE / package).rglob("*.py")):
        bad = imported_packages(path) & set(FORBIDDEN[package])
        assert not bad, f"{path.relative_to(PACKAGE.parent)} imports diffuser.{sorted(bad)}"


def test_top_level_modules_import_no_tools():
    for path in sorted(PACKAGE.glob("*.py")):
        assert "tools" not in imported_packages(path), f"{path.relative_to(PACKAGE.parent)} imports diffuser.tools"


@pytest.mark.parametrize("script", ["train.py", "plan.py"])
def test_entry_points_have_no_env_family_branches(script):
    """What differs between env families lives in diffuser/tasks/; the entry points only call the task."""
    text = (PACKAGE.parent / script).read_text().lower()
    assert "maze2d" not in text.split('"""', 2)[2] and "locomotion" not in text.split('"""', 2)[2]
