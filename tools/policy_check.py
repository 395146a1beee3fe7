"""Evaluate resources against the policy pack offline, through the pack's own gRPC analyzer server.

This is what `pulumi preview --policy-pack policies --policy-pack-config policies/config.<stack>.json`
does, minus the CLI, its providers and the cloud (pulumi/pulumi: pkg/resource/plugin/plugin.go,
pkg/resource/plugin/analyzer_plugin.go, pkg/resource/analyzer/config.go,
pkg/resource/deploy/step_generator.go):

1. Start the pack as the Python language host's `RunPlugin` starts an analyzer
   (sdk/python/cmd/pulumi-language-python/main.go): the interpreter that PulumiPolicy.yaml's
   runtime options name (tools/runtime.py: `policies/venv/bin/python`, which `make install`
   creates), `-u -m pulumi.policy <engine> <pack dir>` in the pack's directory. It runs
   policies/__main__.py, whose PolicyPack serves pulumi_policy's Analyzer service on 127.0.0.1 and
   prints the port. A pack whose virtualenv is missing does not start, with the toolchain's own
   message, as under the CLI.
2. ConfigureStack; GetAnalyzerInfo; Configure with the stack's policy config reconciled with each
   policy's enforcement level and schema defaults, and validated against its schema, as the CLI does.
3. Analyze every registered resource, its inputs marshalled as the engine marshals them for analyzers:
   secrets in their signature envelope, unknowns as the engine's sentinel strings, every number a
   double, `__` keys left out. Then AnalyzeStack over them all.

The validators therefore read what they read under the CLI: `unknown_checking_proxy` objects.
Offline differences: no provider `Check` runs first (the engine analyzes the inputs a provider has
checked, with its defaults filled in), no provider resource is sent, there is no `Remediate` pass
(the pack has no remediations), and AnalyzeStack gets inputs where the engine sends the resources'
resulting state.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import grpc  # type: ignore[import-untyped]
import jsonschema
from google.protobuf import empty_pb2, json_format, struct_pb2  # type: ignore[import-untyped]
from pulumi.output import Unknown
from pulumi.runtime.proto import analyzer_pb2 as proto
from pulumi.runtime.proto import analyzer_pb2_grpc
from pulumi_policy import Secret
from pulumi_policy.deserialize import SPECIAL_SECRET_SIG, SPECIAL_SIG_KEY
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from tools.render import PROJECT, Registered, Rendering
from tools.runtime import Interpreter, Runtime, RuntimeOptionError, language_host

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / "policies"
POLICY_FILE = "PulumiPolicy.yaml"
# The pack never calls the engine back; the plugin's command line carries an address all the same.
NO_ENGINE = "127.0.0.1:0"
STARTUP_SECONDS = 60.0
CALL_SECONDS = 60.0
# As pulumi_policy's server and the CLI's client raise it (pulumi_policy/policy.py).
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 1024 * 1024 * 400)]
LEVELS = {
    "advisory": proto.ADVISORY,
    "mandatory": proto.MANDATORY,
    "remediate": proto.REMEDIATE,
    "disabled": proto.DISABLED,
}


class PolicyConfigError(ValueError):
    """A policy config the CLI would refuse: a bad enforcement level, or properties off their schema."""


class AnalyzerError(RuntimeError):
    """The policy pack did not start, or did not answer."""


@dataclass(frozen=True, order=True)
class Violation:
    """One policy's finding on one resource."""

    mandatory: bool
    policy: str
    resource: str
    message: str


def policy_config(stack: str, root: Path = ROOT) -> dict[str, dict[str, Any]]:
    """The pack's configuration for a stack: policies/config.<stack>.json, also given to the CLI."""
    path = root / "policies" / f"config.{stack}.json"
    loaded: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}
    return loaded


def marshal(value: Any, secret_paths: frozenset[str] = frozenset(), path: str = "") -> Any:
    """A property as the engine marshals it for analyzers (MarshalOptions KeepUnknowns, KeepSecrets,
    SkipInternalKeys; sdk/go/common/resource/plugin/rpc.go), ready for a protobuf Struct.

    Secrets are the paths in `secret_paths` (as tools.render records them) and `pulumi_policy.Secret`
    values; unknowns are `pulumi.output.Unknown` values, or the sentinel strings themselves.
    """
    secret = path in secret_paths or isinstance(value, Secret)
    plain = value.value if isinstance(value, Secret) else value
    wire: Any
    if isinstance(plain, Unknown):
        # A Python program sends every unknown as the string sentinel; the engine passes it on as one.
        wire = UNKNOWN_STRING_VALUE
    elif isinstance(plain, Mapping):
        wire = {
            str(k): marshal(v, secret_paths, f"{path}.{k}" if path else str(k))
            for k, v in plain.items()
            if not str(k).startswith("__")
        }
    elif isinstance(plain, list | tuple):
        wire = [marshal(v, secret_paths, f"{path}[{i}]") for i, v in enumerate(plain)]
    elif plain is None or isinstance(plain, bool | str):
        wire = plain
    elif isinstance(plain, int | float):
        wire = float(plain)
    else:
        raise TypeError(f"{path or 'properties'}: a {type(plain).__name__} cannot be sent to the analyzer")
    return {SPECIAL_SIG_KEY: SPECIAL_SECRET_SIG, "value": wire} if secret else wire


def _struct(fields: Mapping[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(fields)
    return message


Layer = dict[str, tuple[int | None, dict[str, Any]]]


def _parse(config: Mapping[str, Any]) -> Layer:
    """The config file as the CLI reads it: a level, or an object of properties with an optional
    `enforcementLevel` (parsePolicyPackConfig in pkg/resource/analyzer/config.go)."""
    parsed: Layer = {}
    for name, entry in config.items():
        if isinstance(entry, str):
            level, properties = entry, {}
        elif isinstance(entry, Mapping):
            properties = dict(entry)
            level = properties.pop("enforcementLevel", None)
        else:
            raise PolicyConfigError(f"{name}: {entry!r} is not a valid value; must be a string or object")
        if level is not None and level not in LEVELS:
            raise PolicyConfigError(f"{name}: {level!r} is not a valid enforcement level")
        if level is not None or properties:
            parsed[name] = (None if level is None else LEVELS[level], properties)
    return parsed


def _apply(levels: dict[str, int], properties: dict[str, dict[str, Any]], layer: Layer) -> None:
    """One layer of config over the last (applyConfig in pkg/resource/analyzer/config.go)."""
    everything = layer.get("all", (None, {}))[0]
    if everything is not None:
        levels.update(dict.fromkeys(levels, everything))
    for name, (level, given) in layer.items():
        if level is None and name not in levels:
            # The CLI sends it with no level, and Configure fails: invalid enforcement level "".
            raise PolicyConfigError(f"{name}: the pack has no policy of that name")
        levels[name] = levels[name] if level is None else level
        properties[name] = {**properties.get(name, {}), **given}


def reconcile(info: proto.AnalyzerInfo, config: Mapping[str, Any]) -> dict[str, proto.PolicyConfig]:
    """What the CLI passes to Configure: every policy's level and schema defaults, then the pack's
    initial config, then the file's, validated against each policy's schema
    (ReconcilePolicyPackConfig in pkg/resource/analyzer/config.go)."""
    levels = {p.name: p.enforcementLevel for p in info.policies}
    schemas = {p.name: json_format.MessageToDict(p.configSchema) for p in info.policies}
    properties: dict[str, dict[str, Any]] = {
        name: {k: v["default"] for k, v in schema.get("properties", {}).items() if "default" in v}
        for name, schema in schemas.items()
    }
    # An initial level left unset reads as 0, ADVISORY, in the CLI too (analyzer_plugin.go).
    initial = {
        k: (v.enforcementLevel, json_format.MessageToDict(v.properties))
        for k, v in info.initialConfig.items()
    }
    for layer in (initial, _parse(config)):
        _apply(levels, properties, layer)
    problems = []
    for name, schema in sorted(schemas.items()):
        document = {"type": "object", **{k: v for k, v in schema.items() if v}}
        for error in jsonschema.Draft7Validator(document).iter_errors(properties[name]):
            problems.append(f"{name}: {error.message}")
    if problems:
        raise PolicyConfigError("invalid policy pack config: " + "; ".join(problems))
    return {
        name: proto.PolicyConfig(enforcementLevel=level, properties=_struct(properties.get(name, {})))
        for name, level in levels.items()
    }


def _options(resource: Registered) -> proto.AnalyzerResourceOptions:
    return proto.AnalyzerResourceOptions(
        protect=resource.protect,
        parent=resource.parent or "",
        customTimeouts=proto.AnalyzerResourceOptions.CustomTimeouts(),
    )


def _urn(resource: Registered, project: str, stack: str) -> str:
    return resource.urn or f"urn:pulumi:{stack}::{project}::{resource.type}::{resource.name}"


def _violations(response: proto.AnalyzeResponse, resource: str) -> list[Violation]:
    found = []
    for diagnostic in response.diagnostics:
        # The server prefixes each message with the policy's description (pulumi_policy/policy.py).
        message = diagnostic.message.removeprefix(f"{diagnostic.description}\n")
        mandatory = diagnostic.enforcementLevel == proto.MANDATORY
        found.append(Violation(mandatory, diagnostic.policyName, resource, message))
    return found


def pack_interpreter(pack: Path = PACK, environ: Mapping[str, str] | None = None) -> Interpreter:
    """The interpreter the CLI runs the pack on: what its PulumiPolicy.yaml's runtime options name,
    resolved by the language host with the pack's directory as root (raises AnalyzerError)."""
    if not (pack / POLICY_FILE).is_file():
        raise AnalyzerError(f"{pack} is not a policy pack: it has no {POLICY_FILE}")
    try:
        return language_host(Runtime.load(pack / POLICY_FILE), environ)
    except RuntimeOptionError as error:
        raise AnalyzerError(f"the policy pack in {pack} cannot start: {error}") from error


def analyzer_environment(
    interpreter: Interpreter, environ: Mapping[str, str], stack: Mapping[str, str]
) -> dict[str, str]:
    """The pack's environment as RunPlugin composes it (sdk/python/cmd/pulumi-language-python/main.go):
    the toolchain's activated environment, then the stack's PULUMI_* variables (from the policy
    proxy's ConfigureStack), then the engine's own environment (the request's Env). Go's os/exec
    keeps the last value of a repeated key, so the engine's PATH, PYTHONHOME and VIRTUAL_ENV win
    where it has them; the interpreter runs its own virtualenv whatever they say."""
    return {**interpreter.activate(environ), **stack, **environ}


class PolicyAnalyzer:
    """The policy pack running as the CLI runs it, and a client of its Analyzer service.

    Use it as a context manager; it starts on entry and stops its process on exit.
    """

    def __init__(
        self,
        pack: Path = PACK,
        *,
        project: str = PROJECT,
        stack: str = "dev",
        dry_run: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.pack, self.project, self.stack, self.dry_run = pack, project, stack, dry_run
        # The engine's environment, which the CLI passes on to the plugin: this process's by default.
        self.environ = dict(os.environ if environ is None else environ)
        self.interpreter: Interpreter | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._channel: Any = None
        self._stub: analyzer_pb2_grpc.AnalyzerStub | None = None
        self._info: proto.AnalyzerInfo | None = None

    def __enter__(self) -> PolicyAnalyzer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start the pack's server and connect to it, as the CLI does before the first resource."""
        port = self._spawn()
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
        try:
            grpc.channel_ready_future(self._channel).result(timeout=STARTUP_SECONDS)
        except grpc.FutureTimeoutError as error:
            self.close()
            raise AnalyzerError(f"the policy pack in {self.pack} did not accept a connection") from error
        self._stub = analyzer_pb2_grpc.AnalyzerStub(self._channel)
        stack = proto.AnalyzerStackConfigureRequest(project=self.project, stack=self.stack)
        self._call("ConfigureStack", stack)
        self._info = self._call("GetAnalyzerInfo", empty_pb2.Empty())

    def _spawn(self) -> int:
        self.interpreter = pack_interpreter(self.pack, self.environ)
        # The pack's directory is both the process's and the program's, as an absolute path
        # (ExecPlugin in plugin.go; RunPlugin sets cmd.Dir to it for analyzers).
        directory = Path(os.path.abspath(self.pack))
        stack = {
            "PULUMI_PROJECT": self.project,
            "PULUMI_STACK": self.stack,
            "PULUMI_DRY_RUN": "true" if self.dry_run else "false",
        }
        self._stderr = tempfile.TemporaryFile()  # closed in close()
        self._process = subprocess.Popen(  # noqa: S603 - the pack's own interpreter, with fixed arguments
            [str(self.interpreter.python), "-u", "-m", "pulumi.policy", NO_ENGINE, str(directory)],
            cwd=directory,
            env=analyzer_environment(self.interpreter, self.environ, stack),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        stdout = self._process.stdout
        ready, _, _ = select.select([stdout], [], [], STARTUP_SECONDS) if stdout else ([], [], [])
        line = stdout.readline() if stdout and ready else b""
        if not line.strip().isdigit():
            detail = self._failure(ended=bool(ready))
            self.close()
            raise AnalyzerError(f"the policy pack in {self.pack} did not start: {detail}")
        return int(line)

    @property
    def pid(self) -> int | None:
        """The pack's process id while it runs."""
        return None if self._process is None else self._process.pid

    def _failure(self, ended: bool) -> str:
        if not ended or self._process is None or self._stderr is None:
            return f"no port within {STARTUP_SECONDS:g}s"
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return "it printed no port"
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return " | ".join(lines[-5:]) or "it exited without output"

    def close(self) -> None:
        """Disconnect and stop the pack's process."""
        if self._channel is not None:
            self._channel.close()
            self._channel = self._stub = None
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._process = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _call(self, method: str, request: Any) -> Any:
        if self._stub is None:
            raise AnalyzerError("the policy analyzer is not running; use it as a context manager")
        try:
            return getattr(self._stub, method)(request, timeout=CALL_SECONDS)
        except grpc.RpcError as error:
            raise AnalyzerError(f"{method} failed: {error.code().name}: {error.details()}") from error

    @property
    def info(self) -> proto.AnalyzerInfo:
        """The pack's GetAnalyzerInfo answer: its name, policies, levels and config schemas."""
        if self._info is None:
            raise AnalyzerError("the policy analyzer is not running; use it as a context manager")
        return self._info

    def configure(self, config: Mapping[str, Any]) -> None:
        """Configure the pack with a stack's policy config, as the CLI does (raises PolicyConfigError)."""
        self._call("Configure", proto.ConfigureAnalyzerRequest(policyConfig=reconcile(self.info, config)))

    def _request(self, resource: Registered) -> proto.AnalyzeRequest:
        return proto.AnalyzeRequest(
            urn=_urn(resource, self.project, self.stack),
            type=resource.type,
            name=resource.name,
            properties=_struct(marshal(resource.inputs, resource.secret_paths)),
            options=_options(resource),
        )

    def analyze(self, resource: Registered) -> list[Violation]:
        """What the pack reports on one resource, as the engine asks before creating or changing it."""
        response = self._call("Analyze", self._request(resource))
        return _violations(response, f"{resource.type}::{resource.name}")

    def analyze_stack(self, resources: Iterable[Registered]) -> list[Violation]:
        """What the pack's stack policies report on every resource together."""
        request = proto.AnalyzeStackRequest()
        for resource in resources:
            single = self._request(resource)
            request.resources.add(
                urn=single.urn,
                type=single.type,
                name=single.name,
                properties=single.properties,
                options=single.options,
                parent=single.options.parent,
            )
        return _violations(self._call("AnalyzeStack", request), "stack")


def evaluate(
    rendering: Rendering,
    config: Mapping[str, Any] | None = None,
    analyzer: PolicyAnalyzer | None = None,
) -> list[Violation]:
    """Every violation the pack reports over the rendered resources, sorted.

    `config` defaults to the stack's policies/config.<stack>.json; `analyzer`, to a new one.
    """
    config = policy_config(rendering.stack) if config is None else config
    if analyzer is None:
        with PolicyAnalyzer(stack=rendering.stack) as started:
            return evaluate(rendering, config, started)
    analyzer.configure(config)
    found: list[Violation] = []
    for resource in rendering.resources:
        found += analyzer.analyze(resource)
    found += analyzer.analyze_stack(rendering.resources)
    return sorted(found)
