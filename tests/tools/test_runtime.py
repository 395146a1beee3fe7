"""Every Pulumi project and policy pack here runs on an interpreter that exists and imports what it
runs, resolved as the CLI resolves it; and the resolver follows the CLI's rules (tools/runtime.py).

The checks of the committed files need `make install` (as `make test` does first): they run the
interpreters the CLI would run.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tools.runtime import (
    Interpreter,
    Runtime,
    RuntimeOptionError,
    VirtualEnvError,
    dynamic_provider_host,
    language_host,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
# What each runs: the program (or pack) on the language host's interpreter, and the dynamic
# providers (components/ defines them; the engine unpickles them there) on the provider host's.
NEEDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Pulumi.yaml": (
        ("pulumi", "stacks.program"),
        ("pulumi.dynamic", "components.jobrun", "components.ledger", "components.supabase_api"),
    ),
    "stacks/bootstrap/Pulumi.yaml": (("pulumi", "stacks.bootstrap.program"), ("pulumi.dynamic",)),
    "policies/PulumiPolicy.yaml": (("pulumi.policy", "pulumi_policy"), ()),
}


def pulumi_files() -> list[str]:
    """Every project and policy pack file in the tree, virtualenvs and hidden directories aside."""
    found = []
    for directory, subdirectories, files in os.walk(ROOT):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".") and d != "venv"]
        for name in {"Pulumi.yaml", "PulumiPolicy.yaml"} & set(files):
            found.append(str((Path(directory) / name).relative_to(ROOT)))
    return sorted(found)


def imports(interpreter: Interpreter, cwd: Path, modules: tuple[str, ...]) -> None:
    """`modules` import on the interpreter in `cwd`, with nothing lent through PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    found = subprocess.run(
        [str(interpreter.python), "-c", f"import {', '.join(modules)}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0, f"{interpreter.python}: {found.stderr[-2000:]}"


def test_every_project_and_pack_says_what_it_needs():
    assert pulumi_files() == sorted(NEEDS)


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_the_program_runs_on_an_interpreter_that_exists_and_imports_it(name):
    runtime = Runtime.load(ROOT / name)
    interpreter = language_host(runtime)
    assert interpreter.virtualenv is not None, f"{name} runs on the ambient python: name a virtualenv"
    imports(interpreter, runtime.pwd, NEEDS[name][0])


@pytest.mark.parametrize("name", [name for name, (_, providers) in sorted(NEEDS.items()) if providers])
def test_dynamic_providers_run_on_the_programs_own_virtualenv(name):
    runtime = Runtime.load(ROOT / name)
    interpreter = dynamic_provider_host(runtime, {"PATH": os.defpath})
    # The script joins paths without normalizing them: `..` is resolved by the file system.
    assert interpreter.virtualenv is not None
    assert interpreter.virtualenv.resolve() == (language_host(runtime).virtualenv or Path()).resolve()
    imports(interpreter, runtime.pwd, NEEDS[name][1])


def project(root: Path, text: str, name: str = "Pulumi.yaml") -> Runtime:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text)
    return Runtime.load(root / name)


def fake_virtualenv(path: Path) -> Path:
    """What IsVirtualEnv looks for: a bin/python that is not a directory."""
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").touch(mode=0o755)
    return path


PIP = "runtime:\n  name: python\n  options:\n    toolchain: pip\n"


def test_the_language_host_joins_virtualenv_to_the_files_directory(tmp_path):
    venv = fake_virtualenv(tmp_path / ".venv")
    runtime = project(tmp_path / "infra" / "bootstrap", PIP + "    virtualenv: ../../.venv\n")
    assert language_host(runtime) == Interpreter(venv / "bin" / "python", venv)


def test_a_main_in_a_subdirectory_moves_the_dynamic_providers_virtualenv(tmp_path):
    """pulumi/pulumi#7061: the provider host joins `virtualenv` to the program directory."""
    venv = fake_virtualenv(tmp_path / ".venv")
    (tmp_path / "src").mkdir()
    runtime = project(tmp_path, PIP + "    virtualenv: .venv\nmain: src/\n")
    assert language_host(runtime).virtualenv == venv
    with pytest.raises(VirtualEnvError) as raised:
        dynamic_provider_host(runtime, {})
    moved = tmp_path / "src" / ".venv"
    assert str(raised.value).startswith(
        f'The \'virtualenv\' option in Pulumi.yaml is set to "{moved}", but "{moved}" doesn\'t exist.\n'
    )


def test_the_provider_host_reads_the_option_before_the_environment(tmp_path):
    venv = fake_virtualenv(tmp_path / "own")
    other = fake_virtualenv(tmp_path / "other")
    with_option = project(tmp_path, PIP + "    virtualenv: own\n")
    assert dynamic_provider_host(with_option, {"PULUMI_RUNTIME_VIRTUALENV": str(other)}).virtualenv == venv
    without = project(tmp_path / "bare", PIP)
    assert dynamic_provider_host(without, {"PULUMI_RUNTIME_VIRTUALENV": str(other)}).virtualenv == other


def test_a_missing_virtualenv_is_the_language_hosts_own_error(tmp_path):
    runtime = project(tmp_path, PIP + "    virtualenv: venv\n")
    with pytest.raises(VirtualEnvError) as raised:
        language_host(runtime)
    venv = tmp_path / "venv"
    assert str(raised.value) == (
        f'The \'virtualenv\' option in Pulumi.yaml is set to "venv", but "{venv}" doesn\'t exist; '
        "run the following commands to create the virtual environment and install dependencies into it:\n\n"
        f"    1. python3 -m venv {venv}\n"
        f"    2. {venv}/bin/python -m pip install --upgrade pip setuptools wheel\n"
        f"    3. {venv}/bin/python -m pip install -r requirements.txt\n"
        "\n\nFor more information see: https://www.pulumi.com/docs/intro/languages/python/#virtual-environments"
    )
    (venv / "bin" / "python").mkdir(parents=True)
    with pytest.raises(VirtualEnvError, match="doesn't appear to be a virtual environment"):
        language_host(runtime)


def test_without_a_virtualenv_the_ambient_python_runs_not_activated(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python3", "py"):
        (bin_dir / name).touch(mode=0o755)
    runtime = project(tmp_path / "pack", "runtime: python\n", "PulumiPolicy.yaml")
    assert language_host(runtime, {"PATH": str(bin_dir)}) == Interpreter(bin_dir / "python3", None)
    chosen = {"PATH": str(bin_dir), "PULUMI_PYTHON_CMD": "py"}
    assert language_host(runtime, chosen).python == bin_dir / "py"
    with pytest.raises(RuntimeOptionError, match=r'failed to locate any of \["python3" "python"\]'):
        language_host(runtime, {"PATH": str(tmp_path / "nowhere")})


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("runtime: nodejs\n", "runtime 'nodejs' is not resolved here"),
        ("runtime:\n  name: python\n  options:\n    toolchain: uv\n", "the uv toolchain is not resolved"),
        ("runtime:\n  name: python\n  options:\n    toolchain: poetry\n", "the poetry toolchain"),
        (
            "runtime:\n  name: python\n  options:\n    toolchain: conda\n",
            "unsupported toolchain option: conda",
        ),
        ("runtime:\n  name: python\n  options:\n    virtualenv: [a]\n", "virtualenv option must be a string"),
        ("name: x\n", "`runtime` must be a name, or a mapping with a `name`"),
    ],
)
def test_what_is_not_resolved_here_is_refused_by_name(tmp_path, text, error):
    with pytest.raises(RuntimeOptionError, match=error):
        language_host(project(tmp_path, text))


def test_a_lockfile_above_makes_the_auto_toolchain_refused(tmp_path):
    """With no `toolchain`, a uv.lock or poetry.lock in the program directory or any parent picks
    that toolchain (ResolveToolchain)."""
    (tmp_path / "uv.lock").touch()
    runtime = project(tmp_path / "a" / "b", "runtime: python\n")
    with pytest.raises(RuntimeOptionError, match=f"the uv toolchain \\({tmp_path}/uv.lock picks it\\)"):
        language_host(runtime)


def test_activation_puts_the_virtualenv_first_and_drops_pythonhome(tmp_path):
    venv = tmp_path / "venv"
    interpreter = Interpreter(venv / "bin" / "python", venv)
    environ = {"PATH": "/usr/bin", "PYTHONHOME": "/opt/py", "VIRTUAL_ENV": "/elsewhere", "HOME": "/root"}
    assert interpreter.activate(environ) == {
        "PATH": f"{venv}/bin:/usr/bin",
        "HOME": "/root",
        "VIRTUAL_ENV": str(venv),
    }
    assert interpreter.activate({}) == {"PATH": f"{venv}/bin", "VIRTUAL_ENV": str(venv)}
    assert Interpreter(Path("/usr/bin/python3"), None).activate(environ) == environ
