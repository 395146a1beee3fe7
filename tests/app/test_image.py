"""The container image: lint clean, complete, non-root, and built where a Docker engine exists."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit

HADOLINT = Path(sys.executable).with_name("hadolint")


def test_dockerfile_passes_hadolint(repo_root: Path):
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "info", str(repo_root / "app" / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_dockerfile_runs_as_non_root_and_bakes_in_no_secrets(repo_root: Path):
    lines = (repo_root / "app" / "Dockerfile").read_text().splitlines()
    instructions = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    assert sum(line.startswith("FROM ") for line in instructions) >= 2, "multi-stage"
    users = [line for line in instructions if line.startswith("USER ")]
    assert users and users[-1] != "USER root" and not users[-1].startswith("USER 0")
    for line in instructions:
        upper = line.upper()
        assert not any(
            word in upper for word in ("SECRET", "PASSWORD", "TOKEN", "DATABASE_URL", "API_KEY")
        ), line


def test_package_ships_the_migrations(tmp_path: Path, repo_root: Path):
    """The image installs the package; Alembic must find its config and every revision in it."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(repo_root)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("liftoff-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    revisions = {p.name for p in (repo_root / "app" / "migrations" / "versions").glob("*.py")}
    assert revisions
    for required in ["app/alembic.ini", "app/migrations/env.py", "app/migrations/script.py.mako"]:
        assert required in names
    for revision in revisions:
        assert f"app/migrations/versions/{revision}" in names
    assert not any(name.startswith(("tests/", "components/", "stacks/", "policies/")) for name in names)


def _docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


@pytest.mark.testinfra
@pytest.mark.skipif(not _docker_engine(), reason="needs a running Docker engine")
def test_image_builds_and_runs_as_non_root(repo_root: Path):
    tag = "liftoff-test:local"
    subprocess.run(["docker", "build", "-f", "app/Dockerfile", "-t", tag, "."], cwd=repo_root, check=True)
    uid = subprocess.run(
        ["docker", "run", "--rm", tag, "id", "-u"], capture_output=True, text=True, check=True
    )
    assert uid.stdout.strip() == "10001"
    refused = subprocess.run(["docker", "run", "--rm", tag], capture_output=True, text=True, check=False)
    assert refused.returncode == 2
    assert "api needs these environment variables: DATABASE_URL, REDIS_URL" in refused.stderr


def test_the_image_installs_locked_hash_checked_dependencies(repo_root: Path):
    """Every runtime dependency is pinned in app/requirements.lock, which the Dockerfile installs."""
    lock = (repo_root / "app" / "requirements.lock").read_text()
    pins: dict[str, str] = {}
    for line in lock.splitlines():
        if line and not line.startswith((" ", "#")) and "==" in line:
            name, version = line.split("==", 1)
            pins[canonicalize_name(name)] = version.split()[0].rstrip("\\").strip()
    assert "--hash=sha256:" in lock
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in app/requirements.lock: run `make lock`"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} does not satisfy {spec}"
    for build_requirement in tomllib.loads((repo_root / "pyproject.toml").read_text())["build-system"][
        "requires"
    ]:
        assert canonicalize_name(Requirement(build_requirement).name) in pins
    dockerfile = (repo_root / "app" / "Dockerfile").read_text()
    assert "--require-hashes" in dockerfile and "requirements.lock" in dockerfile
    assert "--no-deps --no-build-isolation ." in dockerfile
