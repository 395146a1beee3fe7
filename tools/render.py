"""Render a stack offline: the real program under Pulumi's mock engine, every registration recorded.

No CLI, no provider plugin, no credentials. Providers' computed outputs (an image digest, a
service URL) are stood in for by values derived from the inputs, so the same inputs always
render the same way and a change shows up as a change.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pulumi
import yaml
from pulumi.runtime import MockCallArgs, MockResourceArgs, rpc

# The type of set_mocks' public `monitor` parameter; pulumi.runtime does not re-export it.
from pulumi.runtime.mocks import MockMonitor

from components.image import source_hash
from components.jobrun import JobRun
from components.supabase_api import SupabaseProject
from stacks.program import IMAGE_SOURCES

if TYPE_CHECKING:
    from stacks.release_plan import ReleasePlan

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "liftoff"
DYNAMIC_PROVIDER = "__provider"
CLIENT_CONFIG_FUNCTION = "gcp:organizations/getClientConfig:getClientConfig"
PROJECT_FUNCTION = "gcp:organizations/getProject:getProject"

# pulumi.runtime.test runs a function the way the engine runs a program, and waits for all it
# started (registrations, and the Output it returns) before it returns. It carries no annotations.
run_under_mocks: Callable[[Callable[[], Any]], Callable[[], None]] = pulumi.runtime.test


@dataclass(frozen=True)
class Registered:
    """One resource the program registered: its type token, name and inputs as the engine saw them.

    `secret_paths` lists the inputs that arrived as secrets (dotted paths, `[i]` for items).
    """

    type: str
    name: str
    custom: bool
    inputs: dict[str, Any]
    secret_paths: frozenset[str] = frozenset()
    protect: bool = False
    urn: str = ""
    parent: str | None = None
    # The URNs the engine orders this resource after: explicit depends_on and input dependencies.
    dependencies: frozenset[str] = frozenset()
    # What the (mock) provider returned: the id and the outputs, computed ones included.
    id: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)
    # Inputs whose recorded values the engine keeps on update (the ignore_changes option, as the
    # engine receives it: property names such as `traffics`, or paths).
    ignore_changes: frozenset[str] = frozenset()


@dataclass
class Rendering:
    """Everything a stack declares, and its outputs (with which of them are secret)."""

    stack: str
    resources: list[Registered] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)

    def of_type(self, token: str) -> list[Registered]:
        return [r for r in self.resources if r.type == token]

    def one(self, token: str, name: str | None = None) -> Registered:
        found = [r for r in self.of_type(token) if name is None or r.name == name]
        if len(found) != 1:
            raise LookupError(f"expected one {token} {name or ''}, found {[r.name for r in found]}")
        return found[0]


def unwrap_secrets(value: Any, path: str = "") -> tuple[Any, set[str]]:
    """Inputs with Pulumi's secret envelopes removed, and the paths that were secret.

    The mock monitor hands a resource's inputs over as the engine received them, a secret still
    in its wire envelope; the SDK's own `rpc.is_rpc_secret` and `rpc.unwrap_rpc_secret` open it.
    """
    if rpc.is_rpc_secret(value):
        inner, paths = unwrap_secrets(rpc.unwrap_rpc_secret(value), path)
        return inner, {path, *paths}
    if isinstance(value, Mapping):
        plain: dict[str, Any] = {}
        found: set[str] = set()
        for key, item in value.items():
            plain[key], inner_paths = unwrap_secrets(item, f"{path}.{key}" if path else str(key))
            found |= inner_paths
        return plain, found
    if isinstance(value, list):
        items = []
        found = set()
        for index, item in enumerate(value):
            plain_item, inner_paths = unwrap_secrets(item, f"{path}[{index}]")
            items.append(plain_item)
            found |= inner_paths
        return items, found
    return value, set()


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _computed(kind: str, name: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Stand-ins for what a provider would compute, derived from the inputs only."""
    if kind == "gcp:serviceaccount/account:Account":
        email = f"{inputs['accountId']}@{inputs.get('project', 'project')}.iam.gserviceaccount.com"
        return {
            "email": email,
            "name": f"projects/{inputs.get('project', 'project')}/serviceAccounts/{email}",
        }
    if kind == "gcp:projects/iAMCustomRole:IAMCustomRole":
        # https://www.pulumi.com/registry/packages/gcp/api-docs/projects/iamcustomrole/ (name:
        # "The name of the role in the format projects/{{project}}/roles/{{role_id}}").
        return {"name": f"projects/{inputs.get('project', 'project')}/roles/{inputs['roleId']}"}
    if kind == "gcp:iam/workloadIdentityPool:WorkloadIdentityPool":
        pool = inputs["workloadIdentityPoolId"]
        return {"name": f"projects/123456789012/locations/global/workloadIdentityPools/{pool}"}
    if kind == "docker-build:index:Image":
        # Like a real build: the digest follows what goes into the image, not where it lies.
        context = Path(str((inputs.get("context") or {}).get("location", ".")))
        digest = "sha256:" + _digest(inputs.get("tags"), source_hash(context, IMAGE_SOURCES))
        return {"digest": digest, "ref": f"{inputs['tags'][0]}@{digest}"}
    if kind == "gcp:cloudrunv2/service:Service":
        return {
            "uri": f"https://{inputs['name']}-{_digest(inputs['name'])[:10]}-ew.a.run.app",
            "trafficStatuses": _statuses(inputs, "traffics"),
        }
    if kind == "gcp:cloudrunv2/workerPool:WorkerPool":
        return {"instanceSplitStatuses": _statuses(inputs, "instanceSplits")}
    if kind == "gcp:secretmanager/secretVersion:SecretVersion":
        return {"version": str(int(_digest(inputs.get("secretData"))[:4], 16) % 97 + 1)}
    if kind == JobRun.TYPE:
        return {"execution": f"{inputs['job']}/executions/{name}-{_digest(inputs.get('trigger'))[:5]}"}
    if kind == SupabaseProject.TYPE:
        # Like the Management API: a 20-letter ref, and a pooler host that the region does not name.
        ref = inputs.get("project_ref") or "".join(chr(97 + int(c, 16)) for c in _digest(name)[:20])
        return {
            "id": ref,
            "ref": ref,
            "status": "ACTIVE_HEALTHY",
            "database_host": f"db.{ref}.supabase.co",
            "pooler_host": f"aws-9-mock-{_digest(ref)[:6]}.pooler.supabase.com",
            "pooler_user": f"postgres.{ref}",
            "pooler_database": "postgres",
            "pooler_transaction_port": 6543,
            "pooler_session_port": 5432,
        }
    if kind == "upstash:index/redisDatabase:RedisDatabase":
        return {
            "endpoint": f"{inputs['databaseName']}.upstash.io",
            "port": 6379,
            "password": "mock-redis-password",
        }
    if kind == "random:index/randomPassword:RandomPassword":
        return {"result": "mock-password-" + _digest(name)[:12]}
    if kind == "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig":
        # Assigned by Monitoring, unique: two stacks' checks of the same resource name differ.
        return {
            "uptimeCheckId": f"{name}-check-{_digest(inputs.get('project'), inputs.get('displayName'))[:8]}"
        }
    if kind == "gcp:monitoring/notificationChannel:NotificationChannel":
        return {"name": f"projects/mock/notificationChannels/{_digest(name)[:12]}"}
    return {}


def _statuses(inputs: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """What Cloud Run reports as serving right after this update: the declared split, with the
    latest revision resolved to the template's (the newest one, as this update creates it)."""
    latest = (inputs.get("template") or {}).get("revision")
    statuses = []
    for target in inputs.get(key) or [{"type": "LATEST", "percent": 100}]:
        is_latest = str(target.get("type", "")).endswith("LATEST")
        statuses.append({**target, "revision": latest if is_latest else target.get("revision")})
    return statuses


class RecordingMocks(pulumi.runtime.Mocks):
    """Mocks that keep every registration."""

    def __init__(self) -> None:
        self.resources: list[Registered] = []
        # Resource options the mocks API does not pass on, keyed by (type, name).
        self.options: dict[tuple[str, str], Options] = {}

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        inputs, secret_paths = unwrap_secrets(dict(args.inputs))
        # A dynamic resource carries its provider, pickled, as an input: code, not configuration.
        # (Its secret path stays recorded: the engine marks it secret when any input is.)
        inputs.pop(DYNAMIC_PROVIDER, None)
        options = self.options.get((args.typ, args.name), Options())
        computed = _computed(args.typ, args.name, inputs)
        outputs = {**inputs, **computed}
        resource_id = str(outputs.pop("id", f"{args.name}-id"))
        self.resources.append(
            Registered(
                type=args.typ,
                name=args.name,
                custom=bool(args.custom),
                inputs=inputs,
                secret_paths=frozenset(secret_paths),
                protect=options.protect,
                urn=options.urn,
                parent=options.parent,
                dependencies=options.dependencies,
                id=resource_id,
                outputs=outputs,
                ignore_changes=options.ignore_changes,
            )
        )
        state = {**dict(args.inputs), **computed}
        state.pop("id", None)
        return resource_id, state

    def call(self, args: MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        # A bare dict: the mock monitor reads a tuple's second item as a list of failures.
        if args.token == CLIENT_CONFIG_FUNCTION:
            return {"accessToken": "mock-access-token", "id": "mock", "project": "mock"}  # type: ignore[return-value]
        if args.token == PROJECT_FUNCTION:
            return project_lookup(str(args.args.get("projectId") or "mock"))  # type: ignore[return-value]
        return {}  # type: ignore[return-value]


def project_lookup(project_id: str) -> dict[str, Any]:
    """What getProject reads for a project: a 12-digit number, a stand-in derived from the id."""
    number = str(10**11 + int(_digest(project_id)[:12], 16) % (9 * 10**11))
    return {"projectId": project_id, "number": number, "name": project_id, "id": f"projects/{project_id}"}


@dataclass(frozen=True)
class Options:
    """The resource options of one registration that the mocks API does not pass on."""

    protect: bool = False
    urn: str = ""
    parent: str | None = None
    dependencies: frozenset[str] = frozenset()
    ignore_changes: frozenset[str] = frozenset()


class RecordingMonitor(MockMonitor):
    """The mock monitor, also noting each registration's protect flag, URN, parent, dependencies
    and ignored changes."""

    mocks: RecordingMocks

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (the gRPC method's name)
        urn = self.make_urn(request.parent, request.type, request.name)
        self.mocks.options[(request.type, request.name)] = Options(
            protect=bool(request.protect),
            urn=urn,
            parent=request.parent or None,
            dependencies=frozenset(request.dependencies),
            ignore_changes=frozenset(request.ignoreChanges),
        )
        return super().RegisterResource(request)  # type: ignore[no-untyped-call]


def _stack_file(stack: str, root: Path) -> dict[str, Any]:
    path = root / f"Pulumi.{stack}.yaml"
    document = yaml.safe_load(path.read_text()) or {}
    config: dict[str, Any] = document.get("config") or {}
    return config


def stack_config(stack: str, root: Path = ROOT) -> dict[str, Any]:
    """The `config:` of Pulumi.<stack>.yaml, without encrypted values (those need the real CLI)."""
    return {
        k: v for k, v in _stack_file(stack, root).items() if not (isinstance(v, Mapping) and "secure" in v)
    }


def secret_keys(stack: str, root: Path = ROOT) -> list[str]:
    """The keys Pulumi.<stack>.yaml holds encrypted (`secure:`)."""
    return sorted(k for k, v in _stack_file(stack, root).items() if isinstance(v, Mapping) and "secure" in v)


def render(
    stack: str,
    config: Mapping[str, Any],
    secrets: Mapping[str, str] | None = None,
    program: Callable[[], Mapping[str, Any]] | None = None,
    project: str = PROJECT,
    release: ReleasePlan | None = None,
) -> Rendering:
    """Run a program (Liftoff's, unless given) for `stack` with this config under the mock engine.

    `release` is the traffic plan of one release step, passed to Liftoff's program.
    """
    with mock_engine_loop():
        return _render(stack, config, secrets, program, project, release)


@contextmanager
def mock_engine_loop() -> Iterator[None]:
    """The current event loop for one run under the mock engine, closed afterwards with its threads'.

    Pulumi's synchronous helpers run on the current event loop, so each run gets its own.
    """
    loop = asyncio.new_event_loop()
    loop.set_default_executor(_EngineThreads())
    asyncio.set_event_loop(loop)
    try:
        yield
    finally:
        _close_loop(loop)
        asyncio.set_event_loop(None)


class _EngineThreads(ThreadPoolExecutor):
    """The threads the engine's calls run on, each with an event loop that closes with them.

    Pulumi's mock monitor makes a loop on each thread that has none (pulumi/runtime/mocks.py,
    `_ensure_event_loop`) and never closes it: left to the garbage collector, such a loop can
    fail to close once its own socket is gone, and pytest reports that at the end of a test run.
    """

    def __init__(self) -> None:
        self.loops: list[asyncio.AbstractEventLoop] = []
        super().__init__(thread_name_prefix="mock-engine", initializer=self._start)

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loops.append(loop)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        for loop in self.loops:
            loop.close()


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Closes the loop as asyncio.run does: a program that raised leaves registrations in flight."""
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()


def _render(
    stack: str,
    config: Mapping[str, Any],
    secrets: Mapping[str, str] | None,
    program: Callable[[], Mapping[str, Any]] | None,
    project: str,
    release: ReleasePlan | None = None,
) -> Rendering:
    declare = program or _liftoff(stack, release)
    flat = {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
    flat.update(secrets or {})
    pulumi.runtime.set_all_config(flat, secret_keys=list(secrets or {}))
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(
        mocks, project=project, stack=stack, preview=False, monitor=RecordingMonitor(mocks)
    )
    rendering = Rendering(stack=stack, resources=mocks.resources)

    def run() -> pulumi.Output[list[Any]]:
        return record_exports(declare(), rendering)

    run_under_mocks(run)()
    return rendering


def _liftoff(stack: str, release: ReleasePlan | None) -> Callable[[], Mapping[str, Any]]:
    """Liftoff's own program for `stack`, its settings read when it runs (under the mocks' config)."""
    from stacks.program import build
    from stacks.settings import load

    def liftoff() -> Mapping[str, Any]:
        return build(load(stack=stack), release)

    return liftoff


def record_exports(exports: Mapping[str, Any], rendering: Rendering) -> pulumi.Output[list[Any]]:
    """An Output that resolves once every export's value, and whether it is secret, is recorded."""
    # Export order, whatever order the values resolve in.
    rendering.outputs.update(dict.fromkeys(exports))
    recorded: list[pulumi.Output[Any]] = []
    for key, value in exports.items():
        output = pulumi.Output.from_input(value)
        recorded.append(output.apply(functools.partial(rendering.outputs.__setitem__, key)))
        is_secret: pulumi.Output[bool] = pulumi.Output.from_input(output.is_secret())
        recorded.append(is_secret.apply(functools.partial(_mark_secret, rendering.secret_outputs, key)))
    return pulumi.Output.all(*recorded)


def _mark_secret(secret_outputs: set[str], key: str, secret: bool) -> None:
    if secret:
        secret_outputs.add(key)
