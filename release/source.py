"""The commit a release is shipped from, as the ledger records it for rollbacks and the schema gate."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def source_commit(root: Path = ROOT) -> str:
    """The commit this checkout is at: GitHub's GITHUB_SHA in CI, else git's HEAD ("" outside git)."""
    if os.environ.get("GITHUB_SHA"):
        return os.environ["GITHUB_SHA"]
    git = shutil.which("git")
    if git is None:
        return ""
    found = subprocess.run(  # noqa: S603 (a fixed git command)
        [git, "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=False
    )
    return found.stdout.strip() if found.returncode == 0 else ""
