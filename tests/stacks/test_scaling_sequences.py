"""The on-demand worker pool on the control-plane model (tests/stacks/cloud.py): the program's
updates, its scaler's decisions (app/scaler/policy.py, as the scaler service makes them) and the
jobs of the queue, in sequence.

The queue stands for Postgres: a job is a row until an instance of the pool runs it. The scaler
reads its bounds from the rendered scaler service's environment and scales as the identity the
program gives it, so a grant the program forgot is a refused PATCH here, as in the cloud.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from app.scaler.policy import Demand, PoolState, ScalePolicy, decide
from release.automation import TRAFFIC_RESOURCES
from stacks.ledger import Ledger, Outcome, Release
from stacks.release_plan import ship, step
from stacks.settings import ConfigError
from tests.stacks.cloud import SERVICE, Cloud, CloudError, Engine
from tests.stacks.conftest import render_stack
from tools.render import ROOT, Rendering, stack_config

pytestmark = pytest.mark.unit

AT = "2026-12-06T10:00:00Z"
SCALER_SERVICE = "scaler-service"


def rendered(stack: str, image: str = "v1", release: Any = None, **overrides: dict[str, Any]) -> Rendering:
    config: dict[str, Any] = {"liftoff:imageTag": image}
    for section, values in overrides.items():
        config[f"liftoff:{section}"] = {**stack_config(stack).get(f"liftoff:{section}", {}), **values}
    return render_stack(stack, config, release=release)


def env_of(rendering: Rendering, name: str) -> dict[str, str]:
    (container,) = rendering.one(SERVICE, name).inputs["template"]["containers"]
    return {e["name"]: e.get("value") for e in container.get("envs", [])}


@dataclass
class System:
    """A stack on the model: its updates, its queue, its scaler and its pool's instances."""

    stack: str
    engine: Engine = field(default_factory=lambda: Engine(Cloud()))
    queued: list[int] = field(default_factory=list)
    ran: dict[int, list[str]] = field(default_factory=dict)  # job -> the revisions that ran it
    idle_seconds: float | None = None
    rendering: Rendering | None = None
    running: int = 0  # jobs an instance holds, not yet finished

    @property
    def pool(self) -> str:
        return f"liftoff-{self.stack}-worker"

    def up(self, rendering: Rendering, *, refresh: bool = True, targets: list[str] | None = None) -> None:
        """`pulumi up` as Pulumi.yaml runs it: refreshed first (options.refresh: always)."""
        if refresh:
            self.engine.refresh(list(self.engine.state))
        result = self.engine.up(rendering, targets=targets)
        assert result.error is None, result.error
        self.rendering = rendering

    def submit(self, count: int = 1) -> None:
        start = len(self.queued) + len(self.ran)
        self.queued += range(start, start + count)

    def scale(self, cause: str) -> int:
        """One reconcile of the scaler service, with its rendered bounds and its own identity."""
        assert self.rendering is not None
        env = env_of(self.rendering, SCALER_SERVICE)
        policy = ScalePolicy(
            min_instances=int(env["SCALER_MIN_INSTANCES"]),
            max_instances=int(env["SCALER_MAX_INSTANCES"]),
            idle_seconds=float(env["SCALER_IDLE_SECONDS"]),
            concurrency=int(env["WORKER_CONCURRENCY"]),
        )
        assert env["SCALER_POOL"].endswith(f"/workerPools/{self.pool}")
        held = self.engine.cloud.workloads[self.pool]
        demand = Demand(queued=len(self.queued), running=self.running, idle_seconds=self.idle_seconds)
        decision = decide(demand, PoolState(held.instances, dict(held.traffic)), policy)
        if decision.instances != held.instances:
            account = self.rendering.one(SERVICE, SCALER_SERVICE).inputs["template"]["serviceAccount"]
            self.engine.cloud.scale(self.pool, decision.instances, f"serviceAccount:{account}")
        return decision.instances

    def work(self, concurrency: int = 4) -> None:
        """Each running instance takes up to `concurrency` queued jobs and runs them once."""
        for revision, instances in self.engine.cloud.workloads[self.pool].allocation().items():
            for _ in range(instances * concurrency):
                if not self.queued:
                    return
                self.ran.setdefault(self.queued.pop(0), []).append(revision)

    def revisions(self) -> list[str]:
        return list(self.engine.cloud.workloads[self.pool].revisions)


def test_a_job_submitted_at_zero_instances_runs_once():
    system = System("staging")
    system.up(rendered("staging"))
    held = system.engine.cloud.workloads[system.pool]
    assert held.instances == 0, "staging's pool starts at its floor: no instance"
    system.submit()
    system.work()
    assert system.queued == [0], "no instance ran it, and it is still there"
    assert system.scale("wake") == 1
    system.work()
    assert system.ran == {0: [system.revisions()[0]]}
    # Idle: nothing queued, the last attempt longer ago than idleSeconds.
    system.idle_seconds = float(env_of(system.rendering, SCALER_SERVICE)["SCALER_IDLE_SECONDS"])  # type: ignore[arg-type]
    assert system.scale("schedule") == 0
    assert held.instances == 0


def test_scaling_renames_nothing():
    system = System("staging")
    system.up(rendered("staging"))
    revisions = system.revisions()
    system.submit(8)
    assert system.scale("wake") == 2, "8 jobs at concurrency 4, within maxInstances 2"
    assert system.revisions() == revisions
    # The next `pulumi up` of the same program, refreshed as Pulumi.yaml asks, changes nothing:
    # no revision, no count, no diff a drift check (`preview --refresh --expect-no-changes`) reports.
    system.engine.refresh(list(system.engine.state))
    again = system.engine.up(rendered("staging"))
    assert again.changes == []
    assert system.engine.cloud.workloads[system.pool].instances == 2
    assert system.revisions() == revisions


def test_an_update_sends_the_recorded_count_so_every_update_is_refreshed():
    """Why Pulumi.yaml refreshes: without it, a new image's update would stop the busy instances."""
    busy = System("staging")
    busy.up(rendered("staging"))
    busy.submit(8)
    busy.scale("wake")
    busy.up(rendered("staging", image="v2"), refresh=False)
    assert busy.engine.cloud.workloads[busy.pool].instances == 0, "the recorded count went back"
    kept = System("staging")
    kept.up(rendered("staging"))
    kept.submit(8)
    kept.scale("wake")
    kept.up(rendered("staging", image="v2"))
    assert kept.engine.cloud.workloads[kept.pool].instances == 2
    assert len(kept.revisions()) == 2, "the new image is a new revision; the count is the scaler's"
    options = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["options"]
    assert options == {"refresh": "always"}


def test_a_release_while_the_pool_is_at_zero():
    """A candidate at 10 % of zero instances gets its share as soon as work arrives."""
    on_demand = {"minInstances": 0, "maxInstances": 10}
    system = System("prod")
    system.up(rendered("prod", worker=on_demand))
    stable = Release(
        system.rendering.outputs["api_revision"],  # type: ignore[union-attr]
        system.rendering.outputs["worker_revision"],  # type: ignore[union-attr]
    )
    ledger = Ledger().record(stable, Outcome.PROMOTED, AT)
    shipping = rendered("prod", image="v2", release=ship(stable, ledger), worker=on_demand)
    system.up(shipping)
    candidate = Release(shipping.outputs["api_revision"], shipping.outputs["worker_revision"])
    held = system.engine.cloud.workloads[system.pool]
    assert held.instances == 0 and held.traffic == {stable.worker: 100, candidate.worker: 0}
    moving = rendered("prod", image="v2", release=step(stable, candidate, 10, ledger), worker=on_demand)
    targets = [moving.one(kind, name).urn for kind, name in TRAFFIC_RESOURCES]
    system.up(moving, targets=targets)
    assert held.traffic == {stable.worker: 90, candidate.worker: 10}
    assert held.instances == 0, "moving the split starts nothing"
    system.submit(40)
    assert system.scale("wake") == 10, "enough for the 10 % share to be one instance"
    assert held.allocation() == {stable.worker: 9, candidate.worker: 1}
    system.work()
    assert not system.queued
    assert sorted(system.ran) == list(range(40)), "every job ran"
    assert all(len(revisions) == 1 for revisions in system.ran.values()), "and each once"
    assert sum(revisions == [candidate.worker] for revisions in system.ran.values()) == 4
    assert system.revisions() == [stable.worker, candidate.worker]


def test_too_few_instances_leave_a_candidate_without_one():
    """The rule the settings enforce (split_instance_problems), seen on the model."""
    system = System("prod")
    system.up(rendered("prod", worker={"minInstances": 0, "maxInstances": 10}))
    held = system.engine.cloud.workloads[system.pool]
    held.traffic = {"stable": 90, "candidate": 10}
    held.instances = 4
    assert held.allocation() == {"stable": 4, "candidate": 0}
    config = {
        "liftoff:worker": {**stack_config("prod")["liftoff:worker"], "minInstances": 0, "maxInstances": 4},
        "liftoff:release": {**stack_config("prod")["liftoff:release"], "steps": [10, 100]},
    }
    with pytest.raises(ConfigError, match="worker.maxInstances: 4 instance"):
        render_stack("prod", config)


def test_only_the_scaler_can_scale_and_no_workload_can():
    system = System("staging")
    system.up(rendered("staging"))
    cloud = system.engine.cloud
    for workload in ("api", "worker", "migrate", "scheduler"):
        member = f"serviceAccount:liftoff-staging-{workload}@liftoff-staging-000000.iam.gserviceaccount.com"
        with pytest.raises(CloudError, match="scale-permissions"):
            cloud.scale(system.pool, 3, member)
        held = {role for _, m, role in cloud.grants if m == member}
        assert not held, f"{workload} holds {held}"
    # The scaler's two roles hold exactly the count's permissions.
    assert sorted(p for permissions in cloud.roles.values() for p in permissions) == [
        "iam.serviceAccounts.actAs",
        "run.workerpools.get",
        "run.workerpools.update",
    ]


def test_the_pool_does_not_go_to_its_floor_while_jobs_run():
    """A long job and an idle clock past idleSeconds: the instance running it stays."""
    system = System("staging")
    system.up(rendered("staging"))
    system.submit(1)
    assert system.scale("wake") == 1
    system.work()
    system.running = 1  # still running, minutes after the last attempt ended
    system.idle_seconds = 10_000.0
    assert system.scale("schedule") == 1
    system.running = 0
    assert system.scale("schedule") == 0
