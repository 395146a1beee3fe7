"""The dependency rules, checked by import-linter against the repository and against planted breaks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "components", "stacks", "policies")

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
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("importer", "imported", "contract"),
    [
        ("app", "components", "The app knows no infrastructure"),
        ("app", "stacks", "The app knows no infrastructure"),
        ("app", "policies", "The app knows no infrastructure"),
        ("components", "app", "Components know nothing of the app, the stacks or the policy pack"),
        ("components", "stacks", "Components know nothing of the app, the stacks or the policy pack"),
        ("components", "policies", "Components know nothing of the app, the stacks or the policy pack"),
        ("policies", "app", "The policy pack stands alone"),
        ("policies", "components", "The policy pack stands alone"),
        ("policies", "stacks", "The policy pack stands alone"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, importer: str, imported: str, contract: str
) -> None:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text('"""A package."""\n')
        (tmp_path / package / "leaf.py").write_text('"""A module."""\n')
    # An import inside a function counts: a lazy import is still a dependency.
    (tmp_path / importer / "culprit.py").write_text(f"def f() -> None:\n    from {imported} import leaf\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")

    result = lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{contract} BROKEN" in result.stdout
    assert f"{importer}.culprit -> {imported}.leaf" in result.stdout
