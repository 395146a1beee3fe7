"""A small model of the Pulumi engine, of the Cloud Run and Secret Manager control planes, and of
the ids a GCP project holds.

The mock engine accepts any registration, so a program that is wrong only across two updates
(a reused revision name, a secret destroyed under a pinned revision) passes it. Here the
renderings of successive `pulumi up`s are applied to a model that keeps state between them and
enforces the documented rules below, each with its source. It models only what Liftoff's
resources need; anything it does not know is recorded and otherwise accepted.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from components.jobrun import PROPAGATION_SECONDS
from tools.render import Registered, Rendering

SERVICE = "gcp:cloudrunv2/service:Service"
POOL = "gcp:cloudrunv2/workerPool:WorkerPool"
JOB = "gcp:cloudrunv2/job:Job"
JOB_RUN = "pulumi-python:dynamic/liftoff:JobRun"
LEDGER = "pulumi-python:dynamic/liftoff:ReleaseLedger"
PROPAGATION = "pulumi-python:dynamic/liftoff:GrantPropagation"
SECRET = "gcp:secretmanager/secret:Secret"
SECRET_VERSION = "gcp:secretmanager/secretVersion:SecretVersion"
SECRET_ACCESS = "gcp:secretmanager/secretIamMember:SecretIamMember"
REPOSITORY = "gcp:artifactregistry/repository:Repository"
ACCOUNT = "gcp:serviceaccount/account:Account"
METRIC = "gcp:logging/metric:Metric"
SCHEDULE = "gcp:cloudscheduler/job:Job"
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
POOL_GRANT = "gcp:cloudrunv2/workerPoolIamMember:WorkerPoolIamMember"
ACCOUNT_GRANT = "gcp:serviceaccount/iAMMember:IAMMember"
WORKLOADS = (SERVICE, POOL, JOB)
# How long JobRun's provider waits between tries while IAM propagates, at most (its backoff's cap).
RETRY_SECONDS = 60.0
# What a refresh reads back of a service and a pool: their traffic, as the control plane has it.
REFRESHED = {SERVICE: ("traffics", "TRAFFIC_TARGET"), POOL: ("instanceSplits", "INSTANCE_SPLIT")}


@dataclass(frozen=True)
class Rule:
    """A documented behaviour of the engine or the cloud, and where it is documented."""

    text: str
    source: str


@dataclass(frozen=True)
class UniqueId:
    """An id the create request names, unique in its project (and location, where `location` names
    the input holding it), and where Google documents that."""

    what: str
    key: str
    location: str | None
    source: str


# Server-assigned ids (notification channels, alert policies, uptime checks) never collide, and a
# display name is not an id; these are the ids a create names.
UNIQUE_IDS = {
    REPOSITORY: UniqueId(
        "Artifact Registry repository",
        "repositoryId",
        "location",
        "https://cloud.google.com/artifact-registry/docs/reference/rest/v1/projects.locations.repositories/create"
        " (repositoryId, under projects/*/locations/*)",
    ),
    ACCOUNT: UniqueId(
        "service account",
        "accountId",
        None,
        "https://cloud.google.com/iam/docs/reference/rest/v1/projects.serviceAccounts/create (accountId:"
        " 'It is unique within a project')",
    ),
    SECRET: UniqueId(
        "secret",
        "secretId",
        None,
        "https://cloud.google.com/secret-manager/docs/reference/rest/v1/projects.secrets/create (secretId:"
        " 'This must be unique within the project')",
    ),
    SERVICE: UniqueId(
        "Cloud Run service",
        "name",
        "location",
        "https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.services/create (serviceId:"
        " 'The unique identifier for the Service')",
    ),
    POOL: UniqueId(
        "Cloud Run worker pool",
        "name",
        "location",
        "https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.workerPools/create"
        " (workerPoolId: 'The unique identifier for the WorkerPool')",
    ),
    JOB: UniqueId(
        "Cloud Run job",
        "name",
        "location",
        "https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.jobs/create (jobId: 'The"
        " unique identifier for the Job')",
    ),
    METRIC: UniqueId(
        "log-based metric",
        "name",
        None,
        "https://cloud.google.com/logging/docs/reference/v2/rest/v2/projects.metrics/create (metric: 'must"
        " not have an identifier that already exists')",
    ),
    SCHEDULE: UniqueId(
        "Cloud Scheduler job",
        "name",
        "region",
        "https://cloud.google.com/scheduler/docs/reference/rest/v1/projects.locations.jobs/create (the job's"
        " name, projects/*/locations/*/jobs/JOB_ID)",
    ),
}

RULES = {
    "revision-name": Rule(
        "A revision is immutable and its name unique in the service: creating a revision under an"
        " existing name with a different template is refused with 409 ALREADY_EXISTS.",
        "https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.services#RevisionTemplate"
        " (revision: 'The unique name for the revision'); https://cloud.google.com/run/docs/managing/revisions"
        " ('Revisions are immutable')",
    ),
    "traffic-target": Rule(
        "Traffic (or a worker pool's instance split) can only go to a revision that exists.",
        "https://cloud.google.com/run/docs/reference/rest/v2/TrafficTarget (revision: 'Revision to which"
        " to send this portion of traffic'); https://cloud.google.com/run/docs/rollouts-rollbacks-traffic-migration",
    ),
    "secret-access": Rule(
        "A revision's (or a job's, or an execution's) service account must be able to access each"
        " secret it references when the revision is deployed (the job created or updated, the"
        " execution started); otherwise the deployment fails.",
        "https://cloud.google.com/run/docs/configuring/services/secrets#access-secret ('the service"
        " account ... must have the Secret Manager Secret Accessor role');"
        " hashicorp/terraform-provider-google#13828 (a job 'errors when trying to use secret it"
        " doesn't have access to')",
    ),
    "iam-propagation": Rule(
        "An IAM grant takes effect only once it has propagated, typically 2 minutes after it is made,"
        " potentially 7 minutes or longer; until then a use of the access it grants is refused as if"
        " it had not been made (a revision, job or execution whose service account cannot read a"
        " secret yet; a caller not yet allowed to run a job).",
        "https://cloud.google.com/iam/docs/access-change-propagation ('Change a policy ... Typically 2"
        " minutes, potentially 7 minutes or longer'); https://cloud.google.com/secret-manager/docs/reference/consistency"
        " ('Propagating IAM permissions is eventually consistent'); hashicorp/terraform-provider-google#16350"
        " ('Apply fails always the first time, second time succeeds')",
    ),
    "secret-version-state": Rule(
        "A destroyed or disabled secret version cannot be accessed, so an instance of a revision"
        " pinned to it cannot start (a rollback to it, or any scale-up, fails).",
        "https://cloud.google.com/secret-manager/docs/destroy-secret-versions;"
        " https://cloud.google.com/secret-manager/docs/disable-secret-versions;"
        " SecretVersion.deletion_policy (DELETE destroys, DISABLE disables, ABANDON leaves it) in"
        " https://www.pulumi.com/registry/packages/gcp/api-docs/secretmanager/secretversion/",
    ),
    "execution-token": Rule(
        "`run_execution_token` names the execution `<job>-<token>` and runs it on create or update;"
        " execution names are unique within a job, so re-sending a token collides.",
        "https://www.pulumi.com/registry/packages/gcp/api-docs/cloudrunv2/job/ (runExecutionToken: 'A"
        " unique string used as a suffix creating a new execution upon job create or update')",
    ),
    "bridged-partial-state": Rule(
        "When a bridged (Terraform) provider's update fails after the API call, the engine records"
        " the new inputs as the resource's state, so the next `up` sees no diff for them.",
        "Terraform plugin SDKv2: a failed Update persists the planned state unless d.Partial(true)"
        " (https://developer.hashicorp.com/terraform/plugin/sdkv2/resources/customizing-differences);"
        " pulumi-terraform-bridge returns it as partial state (pkg/tfbridge/provider.go, Update)",
    ),
    "bridged-create-partial-state": Rule(
        "When a bridged provider's create fails after the API accepted it (the Cloud Run service,"
        " worker pool or job exists; its revision or its operation failed), the engine records the"
        " resource with initialization errors: it holds its id, and the next `up` updates it, even"
        " with no diff, instead of creating it again.",
        "hashicorp/terraform-provider-google@e03b7622a26cf4e878f90bdccaca6aa3d03a7999"
        " google/services/cloudrunv2/resource_cloud_run_v2_job.go and resource_cloud_run_v2_service.go"
        " (Create: d.SetId before the operation wait, kept when it fails; #13828: the job 'still gets"
        " created'); pulumi/pulumi-terraform-bridge@59de6c661df1e7561e6ece7ad7f1c835c63010c4"
        " pkg/tfbridge/provider.go (Create: a state with an id and an error is an initializationError);"
        " pulumi/pulumi@1b5949891b3cefcb9974752b24a5ecef0acc86c8 pkg/resource/deploy/step_generator.go"
        " ('unchanged, but there were initialization errors, generate an empty update step')",
    ),
    "dynamic-failure-state": Rule(
        "When a dynamic provider's create or update raises, nothing new is recorded: the resource"
        " keeps its old state (or stays absent), so the next `up` tries again.",
        "https://www.pulumi.com/docs/iac/concepts/resources/dynamic-providers/ (create/update"
        " results define the state; an exception fails the step)",
    ),
    "ignore-changes": Rule(
        "On an update, an input listed in ignore_changes keeps the value recorded in the state (or"
        " stays absent if none was recorded); it is used as given only when the resource is created.",
        "https://www.pulumi.com/docs/iac/concepts/options/ignorechanges/ ('the engine uses the old"
        " value of the property ... when diffing and applying an update')",
    ),
    "target": Rule(
        "`pulumi up --target URN` creates, updates or deletes only the targeted resources; every other"
        " resource keeps its recorded state, and one that does not exist yet is not created.",
        "https://www.pulumi.com/docs/iac/cli/commands/pulumi_up/ (--target: 'Specify a single resource"
        " URN to update. Other resources will not be updated.')",
    ),
    "refresh": Rule(
        "`pulumi up --refresh` reads each resource from the provider before diffing, so state that"
        " no longer matches the cloud (inputs a failed bridged update recorded, a change by hand)"
        " is corrected first and the update sends what the program declares.",
        "https://www.pulumi.com/docs/iac/cli/commands/pulumi_up/ (--refresh: 'Refresh the state of"
        " the stack's resources before this update'); https://www.pulumi.com/docs/iac/cli/commands/pulumi_refresh/",
    ),
    "dependency-order": Rule(
        "The engine orders steps only by dependencies (depends_on and inputs); independent steps run"
        " in parallel, in any order. A component's depends_on does not reach its children.",
        "https://www.pulumi.com/docs/iac/concepts/options/dependson/;"
        " https://www.pulumi.com/docs/iac/concepts/how-pulumi-works/",
    ),
    "pool-update-count": Rule(
        "An update of a worker pool sends the whole pool, its manual instance count included, as"
        " the update's inputs carry it: an input kept by ignore_changes carries the count the state"
        " recorded, which replaces whatever count the pool runs at.",
        "hashicorp/terraform-provider-google@e03b7622a26cf4e878f90bdccaca6aa3d03a7999"
        " google/services/cloudrunv2/resource_cloud_run_v2_worker_pool.go"
        " (resourceCloudRunV2WorkerPoolUpdate: a PATCH with no update mask; `scaling` sent"
        " whenever the state holds it)",
    ),
    "scaling-no-revision": Rule(
        "Changing a worker pool's manual instance count creates no revision and changes no other"
        " field when the request's update mask names only the count.",
        "https://cloud.google.com/run/docs/configuring/workerpools/manual-scaling ('Changing scaling"
        " mode or changing the manual instance count does not create a new revision');"
        " https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.workerPools/patch"
        " (updateMask)",
    ),
    "scale-permissions": Rule(
        "Setting a worker pool's instance count needs run.workerpools.update on the pool, and"
        " iam.serviceAccounts.actAs on the service account its revisions run as.",
        "https://cloud.google.com/run/docs/configuring/workerpools/manual-scaling ('Required roles':"
        " Cloud Run Developer on the worker pool, Service Account User on the service identity);"
        " https://cloud.google.com/run/docs/reference/iam/permissions (run.workerpools.update)",
    ),
    "instance-split-allocation": Rule(
        "A worker pool's instances go to its revisions in proportion to the instance split; with"
        " too few instances, a revision with a share gets none. No rounding is documented for worker"
        " pools: the model takes the worst case, each share rounded down and the rest to the"
        " largest share.",
        "https://cloud.google.com/run/docs/configuring/services/manual-scaling ('each revision is"
        " allocated instances proportionally ... some revisions will not receive instances');"
        " https://cloud.google.com/run/docs/managing/workerpool-instance-splits-rollbacks",
    ),
    "unique-id": Rule(
        "An id a create request names (a repository, a service account, a secret, a Cloud Run service,"
        " worker pool or job, a log-based metric, a scheduler job) is unique in its project, or in its"
        " project's location: creating one under an id that exists, whether this stack or another stack"
        " in the same project holds it, is refused with 409 ALREADY_EXISTS. A replacement is created"
        " before its predecessor is deleted, so it collides with it too when the id is unchanged.",
        "https://google.aip.dev/133#user-specified-ids ('If a user tries to create a resource with an ID"
        " that would result in a resource name that already exists, the service must error with"
        " ALREADY_EXISTS'); https://cloud.google.com/apis/design/errors (ALREADY_EXISTS is HTTP 409);"
        " per kind: " + "; ".join(f"{u.what}: {u.source}" for u in UNIQUE_IDS.values()),
    ),
}


class CloudError(Exception):
    """A step the real cloud or engine would refuse, naming the rule it breaks."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"[{rule}] {detail} -- {RULES[rule].text} ({RULES[rule].source})")
        self.rule = rule
        self.detail = detail


@dataclass
class Workload:
    """A Cloud Run service or worker pool as the control plane holds it."""

    kind: str
    revisions: dict[str, str] = field(default_factory=dict)  # name -> template fingerprint
    templates: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    latest: str | None = None
    traffic: dict[str, int] = field(default_factory=dict)  # revision -> percent
    instances: int = 0  # a worker pool's manual instance count

    def allocation(self) -> dict[str, int]:
        """RULES["instance-split-allocation"]: instances per revision, each share rounded down and
        what is left to the largest share."""
        shares = {revision: percent for revision, percent in self.traffic.items() if percent > 0}
        counts = {revision: self.instances * percent // 100 for revision, percent in shares.items()}
        if shares:
            counts[max(shares, key=lambda r: shares[r])] += self.instances - sum(counts.values())
        return counts


@dataclass
class Iam:
    """Who has been granted access to what, and when: RULES["iam-propagation"] on a clock.

    `now` is the control planes' time in seconds; what waits (a dynamic provider's backoff, an
    execution's run) moves it on. With `delay` 0 a grant takes effect at once.
    """

    delay: float = 0.0
    now: float = 0.0
    granted: dict[tuple[str, str], float] = field(default_factory=dict)  # (resource, member) -> when

    def grant(self, resource: str, member: str) -> None:
        self.granted.setdefault((resource, member), self.now)

    def revoke(self, resource: str, member: str) -> None:
        self.granted.pop((resource, member), None)

    def allows(self, resource: str, member: str) -> bool:
        since = self.granted.get((resource, member))
        return since is not None and self.now >= since + self.delay

    def wait(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Execution:
    name: str
    image: str
    succeeded: bool


@dataclass
class Cloud:
    """The control planes' state, across updates."""

    workloads: dict[str, Workload] = field(default_factory=dict)
    jobs: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # job name -> inputs
    executions: dict[str, list[Execution]] = field(default_factory=dict)
    # secret id -> version -> "enabled" | "disabled" | "destroyed"
    versions: dict[str, dict[str, str]] = field(default_factory=dict)
    iam: Iam = field(default_factory=Iam)  # secret accessors: (secret id, member)
    # Images whose migrations fail when run (a bad migration, or a database that is down).
    failing_images: set[str] = field(default_factory=set)
    # RULES["unique-id"]: (type, project, location, id) -> the URN of the resource holding it.
    ids: dict[tuple[str, str | None, str | None, str], str] = field(default_factory=dict)
    # Custom roles (name -> permissions) and role grants on a pool or an account: (resource, member, role).
    roles: dict[str, tuple[str, ...]] = field(default_factory=dict)
    grants: set[tuple[str, str, str]] = field(default_factory=set)

    def permits(self, member: str, permission: str, resource: str) -> bool:
        return any(
            (r, m) == (resource, member) and permission in self.roles.get(role, ())
            for r, m, role in self.grants
        )

    def scale(self, pool: str, instances: int, member: str) -> None:
        """The scaler's PATCH of the count alone: RULES["scale-permissions"] and
        RULES["scaling-no-revision"]."""
        held = self.workloads[pool]
        identity = account(POOL, held.templates[held.latest or next(iter(held.templates))]).split(":", 1)[1]
        needed = {
            ("run.workerpools.update", f"workerPools/{pool}"),
            ("iam.serviceAccounts.actAs", f"serviceAccounts/{identity}"),
        }
        missing = sorted(p for p, resource in needed if not self.permits(member, p, resource))
        if missing:
            raise CloudError("scale-permissions", f"{member} lacks {', '.join(missing)} to scale {pool}")
        held.instances = instances

    def serving(self, name: str) -> dict[str, int]:
        return {r: p for r, p in self.workloads[name].traffic.items() if p > 0}


def fingerprint(template: Mapping[str, Any]) -> str:
    return json.dumps(template, sort_keys=True, default=str)


def containers(kind: str, template: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    inner = template.get("template", {}) if kind == JOB else template
    return list(inner.get("containers") or [])


def secret_refs(kind: str, template: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(secret id, version) of every secret a template's containers read."""
    refs = []
    for container in containers(kind, template):
        for env in container.get("envs") or []:
            ref = (env.get("valueSource") or {}).get("secretKeyRef")
            if ref:
                refs.append((str(ref["secret"]), str(ref.get("version", "latest"))))
    return refs


def account(kind: str, template: Mapping[str, Any]) -> str:
    inner = template.get("template", {}) if kind == JOB else template
    return f"serviceAccount:{inner.get('serviceAccount', '')}"


@dataclass
class Up:
    """What one `pulumi up` did: its steps in order, and the error that stopped it, if any.

    `diffs` names, per updated or replaced resource (type, name), the inputs that changed once
    ignore_changes is applied.
    """

    steps: list[tuple[str, str, str]] = field(default_factory=list)
    error: CloudError | None = None
    diffs: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)

    @property
    def changes(self) -> list[tuple[str, str, str]]:
        return [step for step in self.steps if step[0] != "same"]


class Engine:
    """Pulumi's engine, reduced to what matters here: diffs, order, failures and state."""

    # Properties a change of which replaces the resource (ForceNew in the provider's schema).
    REPLACE_ON = {
        SECRET_VERSION: ("secretData", "secret"),
        SECRET: ("secretId",),
        REPOSITORY: ("repositoryId", "location", "project"),
    }

    def __init__(self, cloud: Cloud | None = None, project: str | None = None) -> None:
        """`cloud` may be shared by several engines: stacks (each with its own state) in one cloud.

        `project` is the provider's project (`gcp:project`), where a resource that names none lives.
        """
        self.cloud = cloud or Cloud()
        self.project = project
        self.state: dict[str, Registered] = {}
        # RULES["bridged-create-partial-state"]: URNs recorded with initialization errors.
        self.init_errors: set[str] = set()

    def up(self, rendering: Rendering, targets: Collection[str] | None = None) -> Up:
        """Apply a rendering; stop at the first refused step, as `pulumi up` does.

        `targets` (URNs) is `pulumi up --target`: RULES["target"].
        """
        result = Up()
        ids = {r.id: r for r in rendering.resources}
        replaced: list[Registered] = []

        def targeted(urn: str) -> bool:
            return targets is None or urn in targets

        try:
            for declared in schedule(rendering.resources):
                if not declared.custom or not targeted(declared.urn):
                    continue
                old = self.state.get(declared.urn)
                resource = self._kept(old, declared)
                op = self._op(old, resource)
                result.steps.append((op, resource.type, resource.name))
                if op == "same":
                    continue
                if old is not None:
                    result.diffs[(resource.type, resource.name)] = changed_inputs(old, resource)
                self._apply(op, old, resource, ids)
                if op == "replace" and old is not None:
                    replaced.append(old)
            declared_urns = {x.urn for x in rendering.resources}
            for gone in [r for urn, r in self.state.items() if urn not in declared_urns and targeted(urn)]:
                result.steps.append(("delete", gone.type, gone.name))
                self._delete(gone, ids)
                del self.state[gone.urn]
                self.init_errors.discard(gone.urn)
            for old in replaced:
                self._delete(old, ids)
        except CloudError as error:
            result.error = error
        return result

    @staticmethod
    def _kept(old: Registered | None, new: Registered) -> Registered:
        """RULES["ignore-changes"]: on update, ignored inputs keep their recorded values."""
        if old is None or not new.ignore_changes:
            return new
        inputs = dict(new.inputs)
        for key in new.ignore_changes:
            if "." in key or "[" in key:
                raise NotImplementedError(f"{new.name}: the model ignores top-level inputs only, not {key}")
            if key in old.inputs:
                inputs[key] = old.inputs[key]
            else:
                inputs.pop(key, None)
        return replace(new, inputs=inputs)

    def _op(self, old: Registered | None, new: Registered) -> str:
        if old is None:
            return "create"
        if old.inputs == new.inputs:
            # RULES["bridged-create-partial-state"]: an empty update "continues" the create.
            return "update" if old.urn in self.init_errors else "same"
        replace_keys = self.REPLACE_ON.get(new.type, ())
        if any(old.inputs.get(k) != new.inputs.get(k) for k in replace_keys):
            return "replace"
        return "update"

    def ledger(self) -> list[dict[str, Any]]:
        """The release ledger as the stack's state holds it (components/ledger.py); [] before any."""
        held = [r for r in self.state.values() if r.type == LEDGER]
        if not held:
            return []
        entries: list[dict[str, Any]] = json.loads(str(held[0].inputs.get("entries") or "[]"))
        return entries

    def refresh(self, urns: Collection[str]) -> None:
        """RULES["refresh"]: the traffic of these services and pools (and a pool's instance count)
        as the cloud has it now."""
        for urn in urns:
            held = self.state.get(urn)
            if (
                held is None
                or held.type not in (SERVICE, POOL)
                or held.inputs["name"] not in self.cloud.workloads
            ):
                continue
            key, kind = (
                ("traffics", "TRAFFIC_TARGET")
                if held.type == SERVICE
                else ("instanceSplits", "INSTANCE_SPLIT")
            )
            live = self.cloud.workloads[held.inputs["name"]]
            actual = [
                {"type": f"{kind}_ALLOCATION_TYPE_REVISION", "revision": revision, "percent": percent}
                for revision, percent in live.traffic.items()
            ]
            # An undeclared split is computed by the provider (Optional + Computed in its schema):
            # read back, it stays undeclared and shows no diff.
            refreshed = {**held.inputs, key: actual} if key in held.inputs else dict(held.inputs)
            if held.type == POOL:
                refreshed["scaling"] = {
                    **(held.inputs.get("scaling") or {}),
                    "manualInstanceCount": live.instances,
                }
            self.state[urn] = replace(held, inputs=refreshed)

    def urn(self, kind: str, name: str | None = None) -> str:
        """The URN of the one resource of `kind` (and `name`) in the state, for --target."""
        found = [r.urn for r in self.state.values() if r.type == kind and (name is None or r.name == name)]
        if len(found) != 1:
            raise LookupError(f"expected one {kind} {name or ''} in the state, found {len(found)}")
        return found[0]

    def unique_id(self, resource: Registered) -> tuple[str, str | None, str | None, str] | None:
        """RULES["unique-id"]: the id a resource holds, with where it is unique; None if it names none."""
        kind = UNIQUE_IDS.get(resource.type)
        if kind is None:
            return None
        inputs = resource.inputs
        location = str(inputs[kind.location]) if kind.location else None
        return (resource.type, str(inputs.get("project") or self.project), location, str(inputs[kind.key]))

    def _claim(self, op: str, old: Registered | None, new: Registered) -> None:
        """RULES["unique-id"]: a create (or a replacement) takes its id, which must be free."""
        key = self.unique_id(new)
        if key is None:
            return
        holder = self.cloud.ids.get(key)
        if holder is not None and not (op == "update" and holder == new.urn):
            kind, project, location, name = key
            where = f"project {project}" + (f", {location}" if location else "")
            raise CloudError(
                "unique-id",
                f"{new.name}: {UNIQUE_IDS[kind].what} {name} already exists in {where} ({holder})",
            )
        if op == "update" and old is not None:
            self._release(old)
        self.cloud.ids[key] = new.urn

    def _release(self, resource: Registered) -> None:
        key = self.unique_id(resource)
        if key is not None and self.cloud.ids.get(key) == resource.urn:
            del self.cloud.ids[key]

    def _apply(self, op: str, old: Registered | None, new: Registered, ids: Mapping[str, Registered]) -> None:
        try:
            self._claim(op, old, new)
            self._cloud_step(op, old, new, ids)
        except CloudError as error:
            bridged = new.type.startswith("gcp:")
            if bridged and op == "create" and error.rule != "unique-id":
                # RULES["bridged-create-partial-state"]: it exists, with initialization errors (a
                # create refused with 409 made nothing, and records nothing).
                self.state[new.urn] = new
                self.init_errors.add(new.urn)
            elif error.rule != "secret-version-state" and bridged and op == "update":
                # RULES["bridged-partial-state"]: the new inputs are recorded despite the failure.
                self.state[new.urn] = new
            # RULES["dynamic-failure-state"]: a failed dynamic step records nothing.
            raise
        self.state[new.urn] = new
        self.init_errors.discard(new.urn)

    def _cloud_step(
        self, op: str, old: Registered | None, new: Registered, ids: Mapping[str, Registered]
    ) -> None:
        cloud = self.cloud
        inputs = new.inputs
        if new.type == SECRET_ACCESS:
            if old is not None:
                cloud.iam.revoke(old.inputs["secretId"], old.inputs["member"])
            cloud.iam.grant(inputs["secretId"], inputs["member"])
        elif new.type == SECRET_VERSION:
            secret = ids[inputs["secret"]].inputs["secretId"]
            cloud.versions.setdefault(secret, {})[str(new.outputs["version"])] = "enabled"
        elif new.type in (SERVICE, POOL):
            self._deploy_workload(new)
        elif new.type == CUSTOM_ROLE:
            cloud.roles[f"projects/{inputs['project']}/roles/{inputs['roleId']}"] = tuple(
                inputs["permissions"]
            )
        elif new.type == POOL_GRANT:
            cloud.grants.add((f"workerPools/{inputs['name']}", inputs["member"], inputs["role"]))
        elif new.type == ACCOUNT_GRANT:
            email = str(inputs["serviceAccountId"]).rsplit("/", 1)[-1]
            cloud.grants.add((f"serviceAccounts/{email}", inputs["member"], inputs["role"]))
        elif new.type == JOB:
            self._check_access(JOB, inputs["template"], f"{new.name} job")
            cloud.jobs[inputs["name"]] = inputs
            token = inputs.get("runExecutionToken")
            if token:
                self._execute(inputs["name"], f"{inputs['name']}-{token}")
        elif new.type == JOB_RUN:
            self._run_job(str(inputs["job"]).rsplit("/", 1)[-1])
        elif new.type == PROPAGATION:
            cloud.iam.wait(float(inputs["seconds"]))
        # LEDGER: a dynamic resource that lives in the state only; nothing happens in the cloud.

    def _run_job(self, job: str) -> None:
        """JobRun's provider: an execution refused while a grant propagates is tried again, for
        PROPAGATION_SECONDS after the first refusal (components/jobrun.py; its own tests hold the
        provider to this against the same Iam rule)."""
        refused_at: float | None = None
        while True:
            count = len(self.cloud.executions.get(job, [])) + 1
            try:
                return self._execute(job, f"{job}-{count:05d}")
            except CloudError as error:
                refused_at = self.cloud.iam.now if refused_at is None else refused_at
                if error.rule != "iam-propagation" or self.cloud.iam.now - refused_at >= PROPAGATION_SECONDS:
                    raise
            self.cloud.iam.wait(RETRY_SECONDS)

    def _deploy_workload(self, resource: Registered) -> None:
        kind, inputs = resource.type, resource.inputs
        workload = self.cloud.workloads.setdefault(inputs["name"], Workload(kind))
        template = inputs["template"]
        name = template.get("revision") or f"{inputs['name']}-{len(workload.revisions) + 1:05d}"
        if name in workload.revisions:
            if workload.revisions[name] != fingerprint(template):
                raise CloudError(
                    "revision-name", f"{resource.name}: revision {name} exists with another template"
                )
        else:
            self._check_access(kind, template, f"{resource.name} revision {name}")
            workload.revisions[name] = fingerprint(template)
            workload.templates[name] = template
        workload.latest = name
        targets = inputs.get("traffics") if kind == SERVICE else inputs.get("instanceSplits")
        traffic: dict[str, int] = {}
        for target in targets or [{"type": "LATEST", "percent": 100}]:
            revision = name if str(target.get("type", "")).endswith("LATEST") else target["revision"]
            if revision not in workload.revisions:
                raise CloudError("traffic-target", f"{resource.name}: no revision {revision}")
            traffic[revision] = traffic.get(revision, 0) + int(target.get("percent", 0))
        workload.traffic = traffic
        if kind == POOL:
            # RULES["pool-update-count"]: the count this update carries replaces the running one.
            workload.instances = int((inputs.get("scaling") or {}).get("manualInstanceCount", 0))
        for revision in self.cloud.serving(inputs["name"]):
            self.check_startable(inputs["name"], revision)

    def check_startable(self, workload: str, revision: str) -> None:
        """RULES['secret-version-state']: every secret version the revision pins can be read."""
        held = self.cloud.workloads[workload]
        for secret, version in secret_refs(held.kind, held.templates[revision]):
            state = self.cloud.versions.get(secret, {}).get(version, "missing")
            if state != "enabled":
                raise CloudError(
                    "secret-version-state", f"{revision} pins {secret} version {version}, which is {state}"
                )

    def _check_access(self, kind: str, template: Mapping[str, Any], what: str) -> None:
        member = account(kind, template)
        iam = self.cloud.iam
        for secret, _ in secret_refs(kind, template):
            if (secret, member) not in iam.granted:
                raise CloudError("secret-access", f"{what}: {member} cannot access {secret}")
            if not iam.allows(secret, member):
                age = iam.now - iam.granted[(secret, member)]
                raise CloudError(
                    "iam-propagation", f"{what}: {member}'s access to {secret}, granted {age:g}s ago"
                )

    def _execute(self, job: str, execution: str) -> None:
        history = self.cloud.executions.setdefault(job, [])
        if any(e.name == execution for e in history):
            raise CloudError("execution-token", f"execution {execution} already exists")
        template = self.cloud.jobs[job]["template"]
        self._check_access(JOB, template, f"execution {execution}")
        image = str(containers(JOB, template)[0]["image"])
        succeeded = image not in self.cloud.failing_images
        history.append(Execution(execution, image, succeeded))
        if not succeeded:
            raise JobFailed(execution)

    def _delete(self, resource: Registered, ids: Mapping[str, Registered]) -> None:
        self._release(resource)
        if resource.type == SECRET_ACCESS:
            self.cloud.iam.revoke(resource.inputs["secretId"], resource.inputs["member"])
        elif resource.type == SECRET_VERSION:
            owner = ids.get(resource.inputs["secret"]) or self._by_id(resource.inputs["secret"])
            policy = resource.inputs.get("deletionPolicy", "DELETE")
            after = {"ABANDON": "enabled", "DISABLE": "disabled"}.get(policy, "destroyed")
            self.cloud.versions[owner.inputs["secretId"]][str(resource.outputs["version"])] = after
            # A deleted version can take down what still serves from it.
            for name in self.cloud.workloads:
                for revision in self.cloud.serving(name):
                    self.check_startable(name, revision)

    def _by_id(self, resource_id: str) -> Registered:
        return next(r for r in self.state.values() if r.id == resource_id)

    def last_execution(self, job: str) -> Execution | None:
        history = self.cloud.executions.get(job, [])
        return history[-1] if history else None


class JobFailed(CloudError):
    """An execution ran and failed: the step fails, as the provider reports it."""

    def __init__(self, execution: str) -> None:
        Exception.__init__(self, f"execution {execution} failed")
        self.rule = "dynamic-failure-state"
        self.detail = execution


def changed_inputs(old: Registered, new: Registered) -> frozenset[str]:
    """The top-level inputs whose values differ between two registrations of one resource."""
    keys = old.inputs.keys() | new.inputs.keys()
    return frozenset(k for k in keys if old.inputs.get(k) != new.inputs.get(k))


def schedule(resources: Iterable[Registered]) -> list[Registered]:
    """A legal order that is as hard on missing dependencies as the engine's parallelism can be.

    RULES['dependency-order']: anything not ordered by a dependency may run first or last. So a
    workload starts the moment its own dependencies allow, what it depends on comes before
    everything else, and every step nothing waits for is left to the end.
    """
    pending = list(resources)
    by_urn = {r.urn: r for r in pending}
    needed = _closure([r for r in pending if r.type in WORKLOADS or r.type == JOB_RUN], by_urn)
    done: set[str] = set()
    order: list[Registered] = []
    while pending:
        ready = [r for r in pending if all(d in done or d not in by_urn for d in r.dependencies)]
        if not ready:
            raise ValueError(f"dependency cycle among {[r.name for r in pending]}")
        first = (
            next((r for r in ready if r.type in WORKLOADS), None)
            or next((r for r in ready if r.urn in needed), None)
            or ready[0]
        )
        order.append(first)
        done.add(first.urn)
        pending.remove(first)
    return order


def _closure(roots: list[Registered], by_urn: Mapping[str, Registered]) -> set[str]:
    seen: set[str] = set()
    stack = [d for r in roots for d in r.dependencies]
    while stack:
        urn = stack.pop()
        if urn in seen or urn not in by_urn:
            continue
        seen.add(urn)
        stack.extend(by_urn[urn].dependencies)
    return seen
