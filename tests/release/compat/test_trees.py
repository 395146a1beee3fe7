"""BASE's tree and the interpreter that runs it with its own locked dependencies."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from release.compat import UsageError
from release.compat.trees import LOCK, export, interpreter, resolve

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def test_a_commit_is_exported_with_its_app_and_nothing_of_the_repository(tmp_path):
    tree = export(ROOT, resolve(ROOT, "HEAD"), tmp_path / "base")
    assert (tree / "app" / "__main__.py").is_file() and (tree / LOCK).is_file()
    assert not (tree / "stacks").exists() and not (tree / ".git").exists()


def test_a_ref_git_does_not_know_is_refused():
    with pytest.raises(UsageError, match="no-such-ref"):
        resolve(ROOT, "no-such-ref")


def test_the_same_lock_runs_on_this_interpreter(tmp_path):
    tree = export(ROOT, resolve(ROOT, "HEAD"), tmp_path / "base")
    if (tree / LOCK).read_bytes() != (ROOT / LOCK).read_bytes():
        pytest.skip("the working tree changed the lock")
    assert interpreter(tree, cache=tmp_path / "venvs", current=ROOT) == sys.executable


def test_another_lock_runs_on_the_virtualenv_built_from_it_once(tmp_path):
    tree = tmp_path / "base"
    (tree / "app").mkdir(parents=True)
    (tree / LOCK).write_text("# another lock\n")
    venv = tmp_path / "venvs" / hashlib.sha256(b"# another lock\n").hexdigest()
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed").touch()
    assert interpreter(tree, cache=tmp_path / "venvs", current=ROOT) == str(venv / "bin" / "python")
