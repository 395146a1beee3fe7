"""The pack runs on the interpreter its PulumiPolicy.yaml names, offline exactly as under the CLI.

The CLI runs a local pack on `<pack>/<virtualenv>/bin/python` as it finds it, and installs nothing
into it; `make install` creates policies/venv from policies/requirements.txt. These tests check
that interpreter, that the offline check runs that very process, and that a pack whose virtualenv
is missing does not start, with the toolchain's own message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from tools.policy_check import PACK, AnalyzerError, PolicyAnalyzer, pack_interpreter

pytestmark = pytest.mark.policy

VENV = PACK / "venv"
needs_proc = pytest.mark.skipif(
    not Path("/proc/self/cmdline").exists(), reason="reads the running pack's process from /proc (Linux)"
)


def run(python: Path, code: str) -> subprocess.CompletedProcess[str]:
    """`code` on `python` in the pack's directory, with no PYTHONPATH to lend it anything."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(python), "-c", code], cwd=PACK, env=env, capture_output=True, text=True, check=False
    )


def copy_of_the_pack(into: Path) -> Path:
    """The pack's files without its virtualenv."""
    return Path(shutil.copytree(PACK, into / "pack", ignore=shutil.ignore_patterns("venv", "__pycache__")))


def test_the_runtime_names_the_packs_own_virtualenv_and_it_imports_pulumi_policy():
    runtime = yaml.safe_load((PACK / "PulumiPolicy.yaml").read_text())["runtime"]
    assert runtime == {"name": "python", "options": {"toolchain": "pip", "virtualenv": "venv"}}
    interpreter = pack_interpreter()
    assert interpreter.python == VENV / "bin" / "python"
    assert interpreter.virtualenv == VENV
    found = run(interpreter.python, "import sys, pulumi_policy, pulumi.policy; print(sys.prefix)")
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == VENV


def test_the_packs_virtualenv_holds_only_what_it_declares():
    """An import the pack does not declare in requirements.txt fails under the CLI: so here too."""
    python = pack_interpreter().python
    for module in ("pulumi_gcp", "jsonschema", "fastapi", "tools.render", "components"):
        found = run(python, f"import {module}")
        assert found.returncode != 0, f"{module} is importable from the pack's virtualenv"
        assert "ModuleNotFoundError" in found.stderr


def test_the_pack_declares_the_ranges_the_project_is_tested_with():
    """policies/venv gets the SDK versions the project's .venv runs the rest of the suite with."""
    lines = (PACK / "requirements.txt").read_text().splitlines()
    declared = {r.name: r.specifier for r in map(Requirement, (x for x in lines if x and x[0] != "#"))}
    pyproject = tomllib.loads((PACK.parent / "pyproject.toml").read_text())
    infra = {
        r.name: r.specifier for r in map(Requirement, pyproject["project"]["optional-dependencies"]["infra"])
    }
    assert set(declared) == {"pulumi", "pulumi-policy"}
    assert declared == {name: infra[name] for name in declared}


@needs_proc
def test_the_offline_check_runs_exactly_that_interpreter(policy_analyzer):
    """The running pack's own process: its command line, its executable, and the extension
    modules it loaded, which come from policies/venv and not from the project's virtualenv."""
    python = pack_interpreter().python
    assert policy_analyzer.interpreter is not None
    assert policy_analyzer.interpreter.python == python
    proc = Path("/proc") / str(policy_analyzer.pid)
    argv = (proc / "cmdline").read_bytes().split(b"\0")
    assert argv[:4] == [os.fsencode(python), b"-u", b"-m", b"pulumi.policy"]
    assert argv[5] == os.fsencode(PACK)
    assert (proc / "cwd").resolve() == PACK.resolve()
    assert (proc / "exe").resolve() == python.resolve()
    mapped = {line.split()[-1] for line in (proc / "maps").read_text().splitlines() if "/" in line}
    grpc = [m for m in mapped if "cygrpc" in m]
    assert grpc, "the pack's process has not loaded grpc"
    assert all(Path(m).is_relative_to(VENV.resolve()) for m in grpc), grpc
    project = Path(sys.prefix).resolve()
    assert not [m for m in mapped if Path(m).is_relative_to(project)], "it loaded the project's virtualenv"


@needs_proc
def test_the_pack_gets_the_environment_the_language_host_composes():
    """The toolchain's activation, the stack's PULUMI_* variables, then the engine's environment,
    whose values win (Go keeps the last of a repeated key): VIRTUAL_ENV is the pack's when the
    engine sets none, and PATH stays the engine's."""
    engine = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    with PolicyAnalyzer(stack="staging", environ=engine) as analyzer:
        raw = (Path("/proc") / str(analyzer.pid) / "environ").read_bytes()
    seen = dict(entry.split("=", 1) for entry in raw.decode().split("\0") if entry)
    assert seen == {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "VIRTUAL_ENV": str(VENV),
        "PULUMI_PROJECT": "liftoff",
        "PULUMI_STACK": "staging",
        "PULUMI_DRY_RUN": "true",
    }


def test_a_pack_whose_virtualenv_is_missing_fails_with_the_clis_message(tmp_path):
    pack = copy_of_the_pack(tmp_path)
    analyzer = PolicyAnalyzer(pack)
    with pytest.raises(AnalyzerError) as raised:
        analyzer.start()
    message = str(raised.value)
    assert message.startswith(f"the policy pack in {pack} cannot start: ")
    assert (
        f'The \'virtualenv\' option in Pulumi.yaml is set to "venv", but "{pack}/venv" doesn\'t exist; '
        "run the following commands to create the virtual environment and install dependencies into it:"
    ) in message
    assert f"1. python3 -m venv {pack}/venv\n" in message
    assert f"3. {pack}/venv/bin/python -m pip install -r requirements.txt\n" in message
    assert analyzer.pid is None, "a process was started"


def test_a_pack_whose_virtualenv_is_not_one_fails_with_the_clis_message(tmp_path):
    pack = copy_of_the_pack(tmp_path)
    (pack / "venv" / "bin").mkdir(parents=True)
    with pytest.raises(AnalyzerError, match=f'but "{pack}/venv" doesn\'t appear to be a virtual environment'):
        PolicyAnalyzer(pack).start()


def test_a_copy_whose_virtualenv_links_to_the_real_one_starts_and_reports(tmp_path):
    pack = copy_of_the_pack(tmp_path)
    (pack / "venv").symlink_to(VENV, target_is_directory=True)
    with PolicyAnalyzer(pack) as analyzer:
        assert analyzer.interpreter is not None
        assert analyzer.interpreter.python == pack / "venv" / "bin" / "python"
        assert analyzer.info.name == "liftoff"
