"""SupabaseDatabase under the mock engine: the dynamic resource it registers, and the DSNs it builds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from components.supabase import SupabaseDatabase, SupabaseDatabaseArgs
from components.supabase_api import SupabaseProjectProvider
from tools.render import ROOT, Rendering, render

pytestmark = pytest.mark.unit

PROJECT = "pulumi-python:dynamic/supabase:Project"


def render_database(args: SupabaseDatabaseArgs) -> Rendering:
    def program() -> dict[str, object]:
        database = SupabaseDatabase("database", args)
        return {
            "ref": database.project_ref,
            "transaction": database.transaction_dsn,
            "session": database.session_dsn,
            "jwks": database.jwks_url,
        }

    return render("staging", {}, program=program)


def test_creating_registers_a_protected_dynamic_project_with_a_generated_password():
    rendering = render_database(
        SupabaseDatabaseArgs(name="liftoff-prod", region="eu-west-1", organization_id="acme")
    )
    project = rendering.one(PROJECT)
    assert project.custom and project.protect
    assert project.inputs["organization_slug"] == "acme"
    assert project.inputs["deletion_protection"] is True
    assert project.inputs.get("project_ref") is None
    assert {"db_pass", "__provider"} <= project.secret_paths
    assert project.inputs["db_pass"].startswith("mock-password-")
    ref = rendering.outputs["ref"]
    transaction = rendering.outputs["transaction"]
    # User, host and ports from the project's pooler outputs; the password quoted in.
    assert transaction.startswith(f"postgresql://postgres.{ref}:mock-password-")
    assert "@aws-9-mock-" in transaction and transaction.endswith(":6543/postgres?sslmode=require")
    assert rendering.outputs["session"].endswith(":5432/postgres?sslmode=require")
    assert {"transaction", "session"} <= rendering.secret_outputs
    assert rendering.outputs["jwks"] == f"https://{ref}.supabase.co/auth/v1/.well-known/jwks.json"


def test_adopting_passes_no_password_to_the_provider():
    rendering = render_database(
        SupabaseDatabaseArgs(
            name="liftoff-staging",
            region="eu-west-1",
            project_ref="abcdefghijklmnopqrst",
            db_password="owner's p@ss",
            protect=False,
        )
    )
    project = rendering.one(PROJECT)
    assert project.inputs["project_ref"] == "abcdefghijklmnopqrst"
    assert project.inputs.get("db_pass") is None
    assert project.inputs["deletion_protection"] is False and not project.protect
    assert rendering.of_type("random:index/randomPassword:RandomPassword") == []
    assert rendering.outputs["ref"] == "abcdefghijklmnopqrst"
    assert "postgres.abcdefghijklmnopqrst:owner%27s%20p%40ss@" in rendering.outputs["transaction"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"organization_id": "a", "project_ref": "b", "db_password": "p"}, "exactly one of"),
        ({}, "exactly one of"),
        ({"organization_id": "a", "region": "mars-1"}, "'mars-1' is not a Supabase region"),
        ({"project_ref": "abcdefghijklmnopqrst"}, "needs its db_password"),
    ],
)
def test_bad_arguments_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        SupabaseDatabaseArgs(**{"name": "n", "region": "eu-west-1", **args})


def test_the_engine_provider_process_can_load_the_provider(tmp_path: Path):
    # The engine starts `python -m pulumi.dynamic` in the program's directory (stacks/), where the
    # project root is not on sys.path, and unpickles the provider from the state.
    from pulumi.dynamic.dynamic import serialize_provider

    encoded = serialize_provider(SupabaseProjectProvider("https://api.example.test"))
    script = (
        "import base64, dill, json, sys; p = dill.loads(base64.b64decode(sys.argv[1]));"
        " print(json.dumps([type(p).__module__, p.api_url]))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script, encoded],
        cwd=ROOT / "stacks",
        capture_output=True,
        check=True,
        text=True,
    )
    assert json.loads(loaded.stdout) == ["components.supabase_api", "https://api.example.test"]
