"""Cloud Run jobs: the runs a release and a schedule start, each at the declared run time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from components.jobrun import JobRun
from tools.cost.model import Context, Line, shape
from tools.cost.scheduling import scheduled_runs


def runs_per_release(job_name: str, ctx: Context) -> bool:
    """Whether a JobRun (components/jobrun.py) runs the job on every new image."""
    return any(
        str(r["inputs"].get("job", "")).endswith(f"/jobs/{job_name}") for r in ctx.of_type(JobRun.TYPE)
    )


def cloud_run_jobs(resources: list[Mapping[str, Any]], ctx: Context) -> list[Line]:
    """Runs a month × tasks × the declared run time: on every release, on a schedule, or both."""
    lines = []
    u = ctx.usage
    for r in resources:
        inputs, name = r["inputs"], r["inputs"]["name"]
        cpu, memory = shape(inputs["template"]["template"])
        tasks = int(inputs["template"].get("taskCount", 1))
        runs: list[tuple[float, int, str]] = []
        if runs_per_release(name, ctx):  # a JobRun runs it whenever the image changes: each release
            runs.append((u.releases_per_month, u.migration_seconds, "release"))
        if scheduled := scheduled_runs(name, ctx):
            runs.append((scheduled, u.retention_seconds, "scheduled run"))
        seconds = sum(count * length for count, length, _ in runs) * tasks
        detail = " + ".join(f"{count:.4g} {kind}s × {length} s" for count, length, kind in runs)
        lines.append(
            Line(
                f"run/{name}/runs",
                "Cloud Run",
                f"Job {name}",
                (detail or "runs only when started by hand") + f" of {cpu:g} vCPU, {memory:g} GiB",
                (
                    ctx.charge("run.job.cpu", cpu * seconds, inputs["location"]),
                    ctx.charge("run.job.memory", memory * seconds, inputs["location"]),
                ),
            )
        )
    return lines
