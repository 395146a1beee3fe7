"""ContainerImage under the mock engine, and the source tag that decides when the image is rebuilt."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from components.image import ContainerImage, ContainerImageArgs, source_files, source_hash, source_tag
from tests.components.conftest import Declare, Declared

pytestmark = pytest.mark.unit

TYPE = "liftoff:index:ContainerImage"
REPOSITORY = "gcp:artifactregistry/repository:Repository"
IMAGE = "docker-build:index:Image"
PATH = "europe-west1-docker.pkg.dev/acme-prod/liftoff-prod/app"


def image_args(**overrides: Any) -> ContainerImageArgs:
    values: dict[str, Any] = {
        "project": "acme-prod",
        "region": "europe-west1",
        "repository_id": "liftoff-prod",
        "image_name": "app",
        "context": "/src",
        "dockerfile": "/src/app/Dockerfile",
        "tag": "src-0123456789abcdef",
        "labels": {"app": "liftoff"},
        **overrides,
    }
    return ContainerImageArgs(**values)


@pytest.fixture
def declared(declare: Declare) -> Declared:
    def program() -> dict[str, Any]:
        image = ContainerImage("image", image_args())
        return {"ref": image.ref, "digest": image.digest}

    return declare(program)


def test_a_docker_repository_that_keeps_enough_images_to_roll_back(declared):
    assert declared.child_names(TYPE) == {"image-repository", "image-image"}
    repository = declared.one(REPOSITORY, "image-repository")
    assert repository.inputs == {
        "project": "acme-prod",
        "location": "europe-west1",
        "repositoryId": "liftoff-prod",
        "format": "DOCKER",
        "description": "Liftoff application images.",
        "labels": {"app": "liftoff"},
        "cleanupPolicyDryRun": False,
        "cleanupPolicies": [
            {"id": "keep-recent", "action": "KEEP", "mostRecentVersions": {"keepCount": 30}},
            {
                "id": "delete-untagged",
                "action": "DELETE",
                "condition": {"tagState": "UNTAGGED", "olderThan": "2592000s"},
            },
        ],
    }


def test_the_image_is_built_reproducibly_for_cloud_run_and_pushed_with_a_secret_token(declared):
    image = declared.one(IMAGE, "image-image")
    assert image.inputs["context"] == {"location": "/src"}
    assert image.inputs["dockerfile"] == {"location": "/src/app/Dockerfile"}
    assert image.inputs["platforms"] == ["linux/amd64"]
    assert image.inputs["buildArgs"] == {"SOURCE_DATE_EPOCH": "0"}
    assert image.inputs["push"] is True
    assert image.inputs["tags"] == [f"{PATH}:src-0123456789abcdef"]
    assert image.inputs["registries"] == [
        {
            "address": "europe-west1-docker.pkg.dev",
            "username": "oauth2accesstoken",
            "password": "mock-access-token",
        }
    ]
    assert "registries" in image.secret_paths, "the access token is never stored in the clear"
    assert declared.one(REPOSITORY).urn in image.dependencies


def test_workloads_get_the_image_by_digest_not_by_tag(declared):
    digest = declared.one(IMAGE).outputs["digest"]
    assert digest.startswith("sha256:")
    assert declared.outputs == {"ref": f"{PATH}@{digest}", "digest": digest}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"tag": "-leading-dash"}, "tag"),
        ({"tag": "x" * 129}, "tag"),
        ({"keep_recent": 4}, "keep_recent"),
        ({"repository_id": "Liftoff"}, "repository_id"),
        ({"repository_id": "1iftoff"}, "repository_id"),
        ({"repository_id": "liftoff-"}, "repository_id"),
        ({"repository_id": "l" * 64}, "repository_id"),
    ],
)
def test_bad_args_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        image_args(**overrides)


def test_a_bad_tag_is_named():
    with pytest.raises(ValueError, match="^tag: '-leading-dash' is not a Docker tag"):
        image_args(tag="-leading-dash")


def test_a_repository_id_of_63_characters_is_the_longest():
    assert image_args(repository_id="l" * 63).repository_id == "l" * 63
    with pytest.raises(ValueError, match=r"^repository_id: 'liftoff_prod' is not a repository id"):
        image_args(repository_id="liftoff_prod")


def write(root: Path, files: dict[str, str]) -> None:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def test_the_source_tag_follows_paths_and_contents_only(tmp_path: Path):
    write(tmp_path, {"pyproject.toml": "[project]", "app/main.py": "print(1)", "app/sub/x.py": ""})
    sources = ("pyproject.toml", "app")
    tag = source_tag(tmp_path, sources)
    assert tag.startswith("src-") and len(tag) == 20
    os.utime(tmp_path / "app/main.py", (0, 0))
    write(
        tmp_path, {"app/__pycache__/main.cpython-312.pyc": "bytecode", "app/stale.pyc": "x", "README.md": "-"}
    )
    assert source_tag(tmp_path, sources) == tag, "no mtimes, build leftovers or files outside the sources"
    write(tmp_path, {"app/main.py": "print(2)"})
    changed = source_tag(tmp_path, sources)
    assert changed != tag
    (tmp_path / "app/main.py").rename(tmp_path / "app/server.py")
    assert source_tag(tmp_path, sources) != changed, "a rename changes the inputs too"


def test_source_files_are_sorted_and_skip_leftovers(tmp_path: Path):
    write(
        tmp_path, {"b.txt": "", "app/z.py": "", "app/a.py": "", "app/__pycache__/a.pyc": "", "app/b.pyo": ""}
    )
    found = source_files(tmp_path, ("app", "b.txt", "missing"))
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["app/a.py", "app/z.py", "b.txt"]
    assert source_hash(tmp_path, ("app",)) != source_hash(tmp_path, ("b.txt",))
