"""A clone of the repository to plant migrations in, and one gate session prepared on its HEAD."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.migrate import migrations, script_directory
from release.compat import CompatSession
from release.compat.trees import export

GIT = ["git", "-c", "user.name=Liftoff tests", "-c", "user.email=tests@liftoff.invalid"]
PLANT_REVISION = "0099"
ROOT = Path(__file__).resolve().parents[3]


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run([*GIT, *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@dataclass
class Clone:
    """A clone of the repository at its HEAD: BASE of every plant."""

    path: Path
    base: str
    head_revision: str
    trees: Path

    def plant(self, name: str, upgrade: str, *, phase: str | None = None, imports: str = "") -> Path:
        """Commit a migration `0099_<name>.py` on top of BASE (a branch of its own) and return
        that commit's tree, as the gate reads a HEAD."""
        git(self.path, "checkout", "-q", "--detach", self.base)
        declared = f'phase = "{phase}"\n' if phase else ""
        body = "\n".join(f"    {line}" if line else "" for line in upgrade.strip("\n").splitlines())
        source = (
            f'"""Planted by the compat gate\'s tests: {name}."""\n\n'
            f"import sqlalchemy as sa\nfrom alembic import op\n{imports}\n"
            f'revision = "{PLANT_REVISION}"\ndown_revision = "{self.head_revision}"\n'
            f"branch_labels = None\ndepends_on = None\n{declared}\n\n"
            f"def upgrade() -> None:\n{body}\n\n\ndef downgrade() -> None:\n    pass\n"
        )
        path = self.path / "app" / "migrations" / "versions" / f"{PLANT_REVISION}_{name}.py"
        path.write_text(source)
        git(self.path, "add", str(path))
        git(self.path, "commit", "-q", "-m", f"Plant {name}")
        commit = git(self.path, "rev-parse", "HEAD")
        return export(self.path, commit, self.trees / name)


@pytest.fixture(scope="session")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Clone:
    root = tmp_path_factory.mktemp("compat")
    path = root / "repo"
    # The committed HEAD of this repository, whatever the working tree holds besides.
    subprocess.run(["git", "clone", "-q", str(ROOT), str(path)], check=True)
    head = migrations(script_directory(path / "app" / "migrations"))[-1].revision
    return Clone(path, git(path, "rev-parse", "HEAD"), head, root / "trees")


@pytest.fixture(scope="session")
def session(clone: Clone) -> Iterator[CompatSession]:
    with CompatSession(clone.base, root=clone.path) as prepared:
        yield prepared
