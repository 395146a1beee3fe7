"""The dependency rules, checked by import-linter against the repository and against planted breaks."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The root packages [tool.importlinter] names, and its contracts by name.
PACKAGES = ("app", "components", "stacks", "tools", "release", "policies")
APP = "The app knows no infrastructure"
COMPONENTS = "Components know nothing of the app, the program or the policy pack"
PACK = "The policy pack stands alone"
PROGRAM = "The Pulumi program knows neither the tools nor the release controller"
TOOLS = "The tools know nothing of the release controller"
NO_CIRCLES = "No package imports in a circle"

pytestmark = pytest.mark.unit


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # The CLI reads [tool.importlinter] from the pyproject.toml in its working directory.
    return subprocess.run(  # noqa: S603 - a fixed command on the running interpreter
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command as c; c()",
            "--no-cache",
            "--no-logo",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_repository_keeps_every_dependency_rule() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 kept, 0 broken" in result.stdout
    linter = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert tuple(linter["root_packages"]) == PACKAGES
    assert [c["name"] for c in linter["contracts"]] == [APP, COMPONENTS, PACK, PROGRAM, TOOLS, NO_CIRCLES]


@pytest.mark.parametrize(
    ("importer", "imported", "contract"),
    [
        *[("app", imported, APP) for imported in ("components", "stacks", "tools", "release", "policies")],
        *[
            ("components", imported, COMPONENTS)
            for imported in ("app", "stacks", "tools", "release", "policies")
        ],
        *[("policies", imported, PACK) for imported in ("app", "components", "stacks", "tools", "release")],
        ("stacks", "tools", PROGRAM),
        ("stacks", "release", PROGRAM),
        ("tools", "release", TOOLS),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, importer: str, imported: str, contract: str
) -> None:
    plant_packages(tmp_path)
    # An import inside a function counts: a lazy import is still a dependency.
    (tmp_path / importer / "culprit.py").write_text(f"def f() -> None:\n    from {imported} import leaf\n")

    result = lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{contract} BROKEN" in result.stdout
    assert f"{importer}.culprit -> {imported}.leaf" in result.stdout


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("release", "tools"),
        ("release", "stacks"),
        ("tools", "stacks"),
        ("stacks", "components"),
        ("stacks", "app"),
    ],
)
def test_an_import_that_points_the_allowed_way_keeps_every_contract(
    tmp_path: Path, importer: str, imported: str
) -> None:
    plant_packages(tmp_path)
    (tmp_path / importer / "user.py").write_text(f"from {imported} import leaf\n")

    result = lint_imports(tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 kept, 0 broken" in result.stdout


def test_two_modules_that_import_each_other_break_the_no_circles_contract(tmp_path: Path) -> None:
    plant_packages(tmp_path)
    # The shape plan and cost once had: each lazily imports the other.
    (tmp_path / "tools" / "plan.py").write_text("def f() -> None:\n    from tools import cost\n")
    (tmp_path / "tools" / "cost.py").write_text("def f() -> None:\n    from tools import plan\n")

    result = lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{NO_CIRCLES} BROKEN" in result.stdout
    assert "No cycles are allowed in tools." in result.stdout


def plant_packages(root: Path) -> None:
    """Every root package, each with one module, and the repository's own contracts."""
    for package in PACKAGES:
        (root / package).mkdir()
        (root / package / "__init__.py").write_text('"""A package."""\n')
        (root / package / "leaf.py").write_text('"""A module."""\n')
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
