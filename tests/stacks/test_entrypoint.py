"""The program's entry point runs the way Pulumi runs it: the project root's __main__.py, as a file."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from tests.stacks.conftest import SECRETS
from tools.render import ROOT, RecordingMocks, run_under_mocks, stack_config

pytestmark = pytest.mark.unit


def test_main_runs_with_only_its_own_directory_on_the_path(monkeypatch):
    import asyncio
    import json

    import pulumi

    # Pulumi.yaml names no `main`: the program directory is the root, and runpy puts it on the path.
    program_dir = ROOT
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != ROOT])
    for name in [m for m in sys.modules if m == "stacks" or m.startswith(("stacks.", "components"))]:
        monkeypatch.delitem(sys.modules, name)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        config = {k: v if isinstance(v, str) else json.dumps(v) for k, v in stack_config("prod").items()}
        pulumi.runtime.set_all_config({**config, **SECRETS}, secret_keys=list(SECRETS))
        mocks = RecordingMocks()
        pulumi.runtime.set_mocks(mocks, project="liftoff", stack="prod", preview=False)

        def program() -> None:
            runpy.run_path(str(program_dir), run_name="__main__")

        run_under_mocks(program)()
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    assert any(r.type == "gcp:cloudrunv2/service:Service" for r in mocks.resources)
