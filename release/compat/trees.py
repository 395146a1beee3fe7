"""The source trees a check runs: a commit's app exported from git, and the interpreter with its
own locked dependencies."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from release.compat.report import GateError, UsageError

ROOT = Path(__file__).resolve().parents[2]
LOCK = Path("app/requirements.lock")
MIGRATIONS = Path("app/migrations/versions")
# Where BASE's own dependencies are installed, once per lock file (by its sha256).
VENV_CACHE = ROOT / ".local" / "compat" / "venvs"


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)  # noqa: S603,S607
    if result.returncode != 0:
        raise UsageError(f"git {' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip()


def resolve(root: Path, ref: str) -> str:
    """The commit `ref` names in the repository at `root`; UsageError if it names none."""
    if not ref or ref.startswith("-"):
        raise UsageError(f"{ref!r} is not a git ref")
    try:
        return _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except UsageError:
        raise UsageError(f"{ref!r} names no commit of the repository at {root}") from None


def export(root: Path, commit: str, into: Path) -> Path:
    """The app of `commit` (its `app/` and `pyproject.toml`) written to `into`, as a worktree
    of that commit holds them, without adding a worktree to the repository."""
    archive = subprocess.run(  # noqa: S603
        ["git", "archive", "--format=tar", commit, "app", "pyproject.toml"],  # noqa: S607
        cwd=root,
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise UsageError(f"git archive {commit}: {archive.stderr.decode().strip()}")
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def interpreter(tree: Path, *, cache: Path = VENV_CACHE, current: Path = ROOT) -> str:
    """The Python that runs `tree`'s app with its own locked dependencies: this one when the
    lock is byte-identical to `current`'s, else a virtualenv built once from the lock."""
    lock = (tree / LOCK).read_bytes()
    if (current / LOCK).is_file() and (current / LOCK).read_bytes() == lock:
        return sys.executable
    venv = cache / hashlib.sha256(lock).hexdigest()
    python = venv / "bin" / "python"
    if (venv / ".installed").is_file():
        return str(python)
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    for command in (
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "--require-hashes", "-r", str(tree / LOCK)],
    ):
        result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0:
            raise GateError(f"could not install BASE's locked dependencies: {result.stderr.strip()[-800:]}")
    (venv / ".installed").touch()
    return str(python)


@dataclass(frozen=True)
class Tree:
    """A source tree of the app and the interpreter that runs it."""

    label: str
    path: Path
    python: str
