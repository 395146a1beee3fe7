"""Cloud Run worker pools: a fixed pool's instances all month, an on-demand pool's floor and busy time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stacks.settings import HOURS_PER_MONTH
from tools.cost.cloud_run import SERVICE, plain_env
from tools.cost.model import Context, Line, shape
from tools.cost.prices import CostError
from tools.cost.scheduling import reconciles

WORKER_POOL = "gcp:cloudrunv2/workerPool:WorkerPool"


@dataclass(frozen=True)
class OnDemand:
    """How a scaler sizes its pool, read from the scaler's environment in the plan (app/scaler/)."""

    scaler: str
    floor: int
    ceiling: int
    idle_seconds: float
    concurrency: int
    # The mean wait from the moment the idle period is over to the scheduled reconcile that
    # sets the floor: half the schedule's interval.
    delay_seconds: float


def on_demand(pool: Mapping[str, Any], ctx: Context) -> OnDemand | None:
    """The scaler of this worker pool, if one in the plan names it (SCALER_POOL); None: a fixed pool."""
    name = pool["name"]
    for r in ctx.of_type(SERVICE):
        env = plain_env(r["inputs"]["template"])
        target = env.get("SCALER_POOL")
        if target is None or not (target == name or target.endswith(f"/workerPools/{name}")):
            continue
        service = r["inputs"]["name"]
        runs = reconciles(service, ctx)
        if not runs:
            raise CostError(
                f"the scaler {service} of worker pool {name} has no Cloud Scheduler job asking it to"
                " reconcile: the time its pool takes to go back to its floor cannot be priced"
            )
        try:
            return OnDemand(
                scaler=service,
                floor=int(env["SCALER_MIN_INSTANCES"]),
                ceiling=int(env["SCALER_MAX_INSTANCES"]),
                idle_seconds=float(env["SCALER_IDLE_SECONDS"]),
                concurrency=int(env["WORKER_CONCURRENCY"]),
                delay_seconds=ctx.month / runs / 2,
            )
        except (KeyError, ValueError) as exc:
            raise CostError(f"the scaler {service} does not declare its pool's bounds: {exc!r}") from exc
    return None


@dataclass(frozen=True)
class PoolTime:
    """A worker pool's instance-seconds in a month, by reason, and its instance starts."""

    scaling: OnDemand | None
    floor: float  # the floor's instances (a fixed pool's, all of them), all month
    busy: float = 0.0  # on demand: instances running jobs, above the floor
    tail: float = 0.0  # on demand: instances idle after a busy period until the floor is set
    starting: float = 0.0  # on demand: instances starting, billed before they run a job
    starts: float = 0.0  # instance starts: the floor's at each release, and one a busy period above it
    bursts: float = 0.0  # busy periods that take the pool above its floor

    @property
    def seconds(self) -> float:
        return self.floor + self.busy + self.tail + self.starting


def pool_time(pool: Mapping[str, Any], ctx: Context) -> PoolTime:
    """Fixed: every instance all month. On demand: the floor all month; above it, the jobs' time at
    `concurrency` jobs an instance, and for each busy period one instance's start and idle tail."""
    u = ctx.usage
    scaling = on_demand(pool, ctx)
    if scaling is None:
        count = pool_instances(pool)
        return PoolTime(None, count * ctx.month, starts=count * u.releases_per_month)
    # A pool whose floor is its ceiling never goes above it: no busy period starts an instance.
    bursts = float(u.job_bursts_per_month) if scaling.ceiling > scaling.floor else 0.0
    return PoolTime(
        scaling,
        floor=scaling.floor * ctx.month,
        busy=u.jobs_per_month * u.mean_job_seconds / scaling.concurrency,
        tail=bursts * (scaling.idle_seconds + scaling.delay_seconds),
        starting=bursts * u.worker_start_seconds,
        starts=scaling.floor * u.releases_per_month + bursts,
        bursts=bursts,
    )


def worker_pools(resources: list[Mapping[str, Any]], ctx: Context) -> list[Line]:
    """A worker pool bills its instances' lifetimes, not requests: a fixed pool's all month; an
    on-demand pool's floor all month, and above it what its jobs, busy periods and starts take."""
    lines = []
    for r in resources:
        inputs = r["inputs"]
        time = pool_time(inputs, ctx)
        if time.scaling is None:
            count = pool_instances(inputs)
            lines.append(
                _pool_line(
                    inputs,
                    "instances",
                    f"{count} instance{'s' if count != 1 else ''}, always on",
                    f"{count} × ({_size(inputs)}) × {HOURS_PER_MONTH:g} h",
                    time.floor,
                    ctx,
                )
            )
        else:
            lines += _on_demand_lines(inputs, time, time.scaling, ctx)
    return lines


def _size(inputs: Mapping[str, Any]) -> str:
    cpu, memory = shape(inputs["template"])
    return f"{cpu:g} vCPU, {memory:g} GiB"


def _pool_line(
    inputs: Mapping[str, Any], key: str, item: str, detail: str, seconds: float, ctx: Context, *notes: str
) -> Line:
    cpu, memory = shape(inputs["template"])
    return Line(
        f"run/{inputs['name']}/{key}",
        "Cloud Run",
        f"Worker pool {inputs['name']}: {item}",
        detail,
        (
            ctx.charge("run.workerpool.cpu", cpu * seconds, inputs["location"]),
            ctx.charge("run.workerpool.memory", memory * seconds, inputs["location"]),
        ),
        notes,
    )


def _on_demand_lines(inputs: Mapping[str, Any], time: PoolTime, s: OnDemand, ctx: Context) -> list[Line]:
    u, size = ctx.usage, _size(inputs)
    return [
        _pool_line(
            inputs,
            "floor",
            f"floor of {s.floor} instance{'s' if s.floor != 1 else ''} (on demand)",
            f"{s.floor} × ({size}) × {HOURS_PER_MONTH:g} h",
            time.floor,
            ctx,
        ),
        _pool_line(
            inputs,
            "busy",
            "instances running jobs",
            f"{u.jobs_per_month:,} jobs × {u.mean_job_seconds} s ÷ {s.concurrency} jobs an instance"
            f" of {size}, above the floor",
            time.busy,
            ctx,
            "A worker pool's busy time is counted above its floor, as if the floor ran none of the jobs:"
            " an upper bound where the floor has room for them. It takes each instance as running"
            " `concurrency` jobs at once; gaps between a busy period's jobs are not counted.",
        ),
        _pool_line(
            inputs,
            "idle-tail",
            "idle after each busy period",
            f"{time.bursts:,.0f} busy periods × ({s.idle_seconds:g} s idle + {s.delay_seconds:g} s"
            f" to the next reconcile) of {size}",
            time.tail,
            ctx,
            "One instance a busy period is counted above the floor: a busy period whose queue needs more"
            " keeps the others up through its idle tail too, and a release's split step keeps the"
            " instances that give each revision its share while jobs run; neither is counted.",
        ),
        _pool_line(
            inputs,
            "starts",
            "instance starts (cold starts)",
            f"{time.bursts:,.0f} starts × {u.worker_start_seconds} s of {size}",
            time.starting,
            ctx,
            _first_job_wait(s, u.worker_start_seconds),
        ),
    ]


def _first_job_wait(s: OnDemand, start_seconds: int) -> str:
    """What a pool at its floor costs in time rather than money: the first job's wait."""
    if s.floor == 0:
        return (
            "The first job of each busy period waits for an instance to start: about workerStartSeconds"
            f" ({start_seconds} s, an estimate) after the API's wake, or up to a minute more if the wake"
            ' is lost (BENCHMARKS.md, "The worker pool at zero").'
        )
    return (
        f"A floor of {s.floor} takes the first jobs of a busy period at once; only work beyond its"
        " capacity waits for an instance to start."
    )


def pool_instances(inputs: Mapping[str, Any]) -> int:
    return int((inputs.get("scaling") or {}).get("manualInstanceCount", 1))
