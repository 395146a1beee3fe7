"""The Python interpreter the Pulumi CLI starts for a project, a policy pack or a dynamic provider.

One resolver for every Pulumi.yaml and PulumiPolicy.yaml here, following pulumi/pulumi:

- The language host (sdk/python/cmd/pulumi-language-python/main.go) runs a program (`Run`) and a
  policy pack (`RunPlugin`, kind analyzer) on the toolchain that `parseOptions` and
  `toolchain.ResolveToolchain` pick from `runtime.options` (sdk/python/toolchain/toolchain.go).
  The pip toolchain (sdk/python/toolchain/pip.go) runs `<virtualenv>/bin/python`, the
  `virtualenv` option joined to the directory of the file (`resolveVirtualEnvironmentPath`), or
  the ambient `python3` when the option is absent (only plugins of other kinds default to
  `venv`: `parseOptions`'s isPlugin is false for a program and for an analyzer).
- A dynamic provider runs under `pulumi-resource-pulumi-python` (sdk/python/dist/), a script
  that runs `$PULUMI_RUNTIME_VIRTUALENV/bin/python`, that path made absolute against its own
  working directory. The engine sets every runtime option as `PULUMI_RUNTIME_<OPTION>`, ahead of
  the environment's own (pkg/resource/plugin/provider_plugin.go, NewProvider), and starts the
  plugin in the context's pwd, which is the program directory `main` names, not the project's
  (pkg/engine/project.go, getPwdMain). So a relative `virtualenv` in a project whose `main` is a
  subdirectory names two different directories (pulumi/pulumi#7061, open).

Only what this project uses is resolved: the Python runtime and the pip toolchain. Anything
else is refused with a clear error rather than guessed.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROJECT_FILE = "Pulumi.yaml"
TOOLCHAINS = ("pip", "poetry", "uv")
DOCS = "https://www.pulumi.com/docs/intro/languages/python/#virtual-environments"


class RuntimeOptionError(ValueError):
    """A runtime the CLI refuses, or one this resolver cannot start the way the CLI would."""


class VirtualEnvError(RuntimeOptionError):
    """The virtualenv a runtime names is missing, or is not a virtual environment."""


def _quoted(text: str) -> str:
    """Go's %q for a path: the message text the CLI prints."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Runtime:
    """A Pulumi.yaml's or a PulumiPolicy.yaml's `runtime`, and a project's `main`."""

    file: Path
    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    main: str | None = None

    @classmethod
    def load(cls, file: Path) -> Runtime:
        """The runtime as the CLI reads it: `runtime: python`, or a name with options.

        A pack's `main` is never read when the CLI runs it (pkg/resource/plugin/plugin.go,
        ExecPlugin: NewProgramInfo(pluginDir, pluginDir, ".", options)).
        """
        document = yaml.safe_load(file.read_text()) or {}
        runtime = document.get("runtime") if isinstance(document, Mapping) else None
        if isinstance(runtime, str):
            name, options = runtime, {}
        elif isinstance(runtime, Mapping) and isinstance(runtime.get("name"), str):
            name, options = runtime["name"], dict(runtime.get("options") or {})
        else:
            raise RuntimeOptionError(f"{file}: `runtime` must be a name, or a mapping with a `name`")
        main = document.get("main") if file.name == PROJECT_FILE else None
        return cls(Path(os.path.abspath(file)), name, options, None if main is None else str(main))

    @property
    def root(self) -> Path:
        """The directory of the file: what a relative `virtualenv` is joined to by the language host."""
        return self.file.parent

    @property
    def pwd(self) -> Path:
        """The program directory, where the CLI starts the program and its plugins (getPwdMain)."""
        if self.main is None:
            return self.root
        main = self.root / self.main
        if not main.exists():
            raise RuntimeOptionError(f"{self.file}: project 'main' could not be read: {main}")
        return Path(os.path.normpath(main if main.is_dir() else main.parent))

    @property
    def toolchain(self) -> str:
        """The `toolchain` option as parseOptions accepts it; "auto" when it is absent."""
        chosen = self.options.get("toolchain")
        if chosen is None:
            return "auto"
        if not isinstance(chosen, str):
            raise RuntimeOptionError(f"{self.file}: toolchain option must be a string")
        if chosen not in TOOLCHAINS:
            raise RuntimeOptionError(f"{self.file}: unsupported toolchain option: {chosen}")
        return chosen

    @property
    def virtualenv(self) -> str | None:
        """The `virtualenv` option as written (None when it is absent)."""
        value = self.options.get("virtualenv")
        if value is not None and not isinstance(value, str):
            raise RuntimeOptionError(f"{self.file}: virtualenv option must be a string")
        return value or None


@dataclass(frozen=True)
class Interpreter:
    """The python a host executes, and the virtualenv it activates (None: the ambient python)."""

    python: Path
    virtualenv: Path | None

    def activate(self, environ: Mapping[str, str]) -> dict[str, str]:
        """`environ` as the pip toolchain gives it to the process (toolchain.go, ActivateVirtualEnv):
        the virtualenv's bin first on PATH, VIRTUAL_ENV set to it, PYTHONHOME unset."""
        if self.virtualenv is None:
            return dict(environ)
        bin_dir = str(self.virtualenv / "bin")
        activated: dict[str, str] = {}
        for key, value in environ.items():
            if key.upper() == "PATH":
                activated[key] = f"{bin_dir}{os.pathsep}{value}"
            elif key.upper() not in ("PYTHONHOME", "VIRTUAL_ENV"):
                activated[key] = value
        if not any(key.upper() == "PATH" for key in activated):
            activated["PATH"] = bin_dir
        activated["VIRTUAL_ENV"] = str(self.virtualenv)
        return activated


def _is_python(virtualenv: Path) -> bool:
    """IsVirtualEnv in pip.go: <virtualenv>/bin/python is there and is not a directory (os.Stat,
    which follows symlinks)."""
    try:
        return not stat.S_ISDIR((virtualenv / "bin" / "python").stat().st_mode)
    except OSError:
        return False


def virtualenv_error(option: str, path: Path) -> VirtualEnvError:
    """The language host's own error for a virtualenv it cannot use (NewVirtualEnvError, pip.go)."""
    state = "doesn't exist" if not path.exists() else "doesn't appear to be a virtual environment"
    python = path / "bin" / "python"
    commands = (
        f"    1. python3 -m venv {path}\n"
        f"    2. {python} -m pip install --upgrade pip setuptools wheel\n"
        f"    3. {python} -m pip install -r requirements.txt\n"
    )
    return VirtualEnvError(
        f"The 'virtualenv' option in Pulumi.yaml is set to {_quoted(option)}, but {_quoted(str(path))} "
        f"{state}; run the following commands to create the virtual environment and install "
        f"dependencies into it:\n\n{commands}\n\nFor more information see: {DOCS}"
    )


def _ambient(environ: Mapping[str, str], commands: tuple[str, ...]) -> Interpreter:
    """The first of `commands` on PATH, not activated (CommandPath in pip.go)."""
    for command in commands:
        found = shutil.which(command, path=environ.get("PATH", os.defpath))
        if found:
            return Interpreter(Path(found), None)
    names = " ".join(_quoted(c) for c in commands)
    raise RuntimeOptionError(
        f"failed to locate any of [{names}] on your PATH. Have you installed Python 3.6 or greater?"
    )


def _ambient_commands(environ: Mapping[str, str]) -> tuple[str, ...]:
    chosen = environ.get("PULUMI_PYTHON_CMD")
    return (chosen,) if chosen else ("python3", "python")


def _lockfile(start: Path) -> Path | None:
    """The uv.lock or poetry.lock that makes the "auto" toolchain pick uv or poetry: searched in
    the program directory and every parent (ResolveToolchain and searchup, toolchain.go)."""
    for name in ("uv.lock", "poetry.lock"):
        for directory in (start, *start.parents):
            if (directory / name).exists():
                return directory / name
    return None


def _pip(runtime: Runtime, program_dir: Path) -> None:
    if runtime.name != "python":
        raise RuntimeOptionError(
            f"{runtime.file}: runtime {runtime.name!r} is not resolved here, only python"
        )
    toolchain = runtime.toolchain
    lockfile = _lockfile(program_dir) if toolchain == "auto" else None
    if toolchain in ("poetry", "uv") or lockfile is not None:
        found = f" ({lockfile} picks it)" if lockfile else ""
        raise RuntimeOptionError(
            f"{runtime.file}: the {toolchain if lockfile is None else lockfile.stem} toolchain{found} "
            "is not resolved here, only pip: set `toolchain: pip`"
        )


def language_host(runtime: Runtime, environ: Mapping[str, str] | None = None) -> Interpreter:
    """The interpreter pulumi-language-python runs a program or a policy pack on (pip toolchain).

    A pack runs with its own directory as root and program directory; a program with the project
    root and `main`'s directory. The virtualenv is checked as `Run` checks it (ValidateVenv);
    `RunPlugin` skips that check for a pack and the exec itself fails (`fork/exec
    <virtualenv>/bin/python: no such file or directory`), so the toolchain's own message is
    raised here for both.
    """
    environ = os.environ if environ is None else environ
    _pip(runtime, runtime.pwd)
    option = runtime.virtualenv
    if option is None:
        return _ambient(environ, _ambient_commands(environ))
    virtualenv = Path(os.path.normpath(runtime.root / option))
    if not _is_python(virtualenv):
        raise virtualenv_error(option, virtualenv)
    return Interpreter(virtualenv / "bin" / "python", virtualenv)


def dynamic_provider_host(runtime: Runtime, environ: Mapping[str, str] | None = None) -> Interpreter:
    """The interpreter pulumi-resource-pulumi-python runs the project's dynamic providers on.

    PULUMI_RUNTIME_VIRTUALENV is the project's `virtualenv` option as written (the environment's
    own value only when the option is absent), made absolute against the program directory.
    """
    environ = os.environ if environ is None else environ
    pwd = runtime.pwd
    _pip(runtime, pwd)
    option = runtime.virtualenv or environ.get("PULUMI_RUNTIME_VIRTUALENV")
    if not option:
        return _ambient(environ, (environ.get("PULUMI_PYTHON_CMD") or "python3",))
    virtualenv = pwd / option.rstrip("/")
    if not (virtualenv / "bin" / "python").is_file():
        raise _provider_virtualenv_error(virtualenv, pwd)
    return Interpreter(virtualenv / "bin" / "python", virtualenv)


def _provider_virtualenv_error(virtualenv: Path, pwd: Path) -> VirtualEnvError:
    """What pulumi-resource-pulumi-python prints before it exits 1 (its `-f`/`-d` tests)."""
    state = "doesn't appear to be a virtual environment" if virtualenv.is_dir() else "doesn't exist"
    return VirtualEnvError(
        f'The \'virtualenv\' option in Pulumi.yaml is set to "{virtualenv}", but "{virtualenv}" {state}.\n'
        "Run the following commands to create the virtual environment and install dependencies into it:\n"
        f"    1. python3 -m venv {virtualenv}\n"
        f"    2. {virtualenv}/bin/python -m pip install --upgrade pip setuptools wheel\n"
        f"    3. {virtualenv}/bin/python -m pip install -r {pwd}/requirements.txt\n"
        f"For more information see: {DOCS}"
    )
