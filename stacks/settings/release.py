"""A release's configuration, declared in the stack file under `liftoff:release`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

KEY = "liftoff:release"
# Cloud Run's request metrics are sampled every 60 s and then not visible for up to 180 s
# (https://cloud.google.com/monitoring/api/metrics_gcp_p_z#gcp-run: "Sampled every 60 seconds.
# After sampling, data is not visible for up to 180 seconds."). A soak shorter than that would
# gate on an empty window.
CLOUD_MIN_SOAK_SECONDS = 240
# The longest a step may wait for `minRequests` (four hours).
MAX_SOAK_SECONDS = 14400

Percent = Annotated[int, Field(ge=1, le=100)]
# The stack file's keys: camelCase, strictly typed, nothing unknown.
KEYS = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True, strict=True)


class SyntheticSettings(BaseModel):
    """Probes the controller sends when a step sees too little real traffic to be judged."""

    model_config = KEYS

    rate: float = Field(
        0.0,
        ge=0.0,
        le=50.0,
        strict=False,
        description="Probes a second while a step is short of `minRequests` or `minJobAttempts`: each"
        " is a request to the candidate's tag URL and, when the worker changed, a job (0: none).",
    )
    budget: int = Field(
        0,
        ge=0,
        le=100_000,
        description="The most probes one release sends; once spent, a short step is inconclusive.",
    )

    @property
    def enabled(self) -> bool:
        return self.rate > 0 and self.budget > 0


class ReleaseSettings(BaseModel):
    """Canary steps, soak, gate limits and approval for one stack."""

    model_config = KEYS

    steps: tuple[Percent, ...] = Field(
        (10, 50, 100), strict=False, description="The candidate's share at each step, rising, ending at 100."
    )
    soak_seconds: int = Field(
        300,
        ge=1,
        le=3600,
        description="How long each step runs before its gates are read; in the cloud at least"
        f" {CLOUD_MIN_SOAK_SECONDS} (Cloud Monitoring's ingestion delay).",
    )
    max_soak_seconds: int | None = Field(
        None,
        ge=1,
        le=MAX_SOAK_SECONDS,
        description="How long a step may wait for `minRequests` before it counts as inconclusive;"
        " unset: three soaks.",
    )
    min_requests: int = Field(
        100, ge=0, description="Requests the candidate must serve in a step before its gates are judged."
    )
    max_error_ratio: float = Field(0.02, ge=0.0, le=1.0, description="Highest 5xx ratio of the candidate.")
    max_p95_latency_ms: int = Field(
        1500, ge=1, description="Highest p95 latency of the candidate, in milliseconds."
    )
    max_error_ratio_increase: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="Most the candidate's 5xx ratio may exceed the stable revision's over the same window"
        " (judged when the stable revision served `minRequests`).",
    )
    max_latency_ratio: float = Field(
        1.5,
        ge=1.0,
        description="Most the candidate's p95 latency may be, as a multiple of the stable revision's"
        " over the same window (judged when the stable revision served `minRequests`).",
    )
    min_job_attempts: int = Field(
        20,
        ge=0,
        description="Finished attempts the candidate worker must have in a step before its gates are"
        " judged (read from Postgres, per revision).",
    )
    max_job_failure_ratio: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Highest share of the candidate worker's attempts that fail (retried or failed).",
    )
    max_job_p95_seconds: float = Field(
        600.0, gt=0.0, strict=False, description="Highest p95 duration of the candidate worker's attempts."
    )
    max_expired_leases: int = Field(
        0, ge=0, description="Most attempts the candidate worker may lose by letting their lease expire."
    )
    max_job_failure_ratio_increase: float = Field(
        0.02,
        ge=0.0,
        le=1.0,
        description="Most the candidate worker's failure ratio may exceed the stable one's over the same"
        " window (judged when the stable worker finished `minJobAttempts`).",
    )
    max_job_duration_ratio: float = Field(
        2.0,
        ge=1.0,
        description="Most the candidate worker's p95 attempt duration may be, as a multiple of the"
        " stable one's over the same window.",
    )
    synthetic: SyntheticSettings = Field(
        default_factory=SyntheticSettings,
        description="Probe traffic for quiet steps: `rate` (probes a second) and `budget` (per release);"
        " probes come from a tenant of their own and cost no AI calls.",
    )
    approval: bool = Field(False, description="Ask a person before each step after the first.")
    on_inconclusive: Literal["rollback", "promote"] = Field(
        "rollback",
        description="What a step that never saw `minRequests` does: roll back (safe) or go on. With"
        " `rollback`, every step must be able to reach `minRequests` within `maxSoakSeconds` at the"
        " traffic `liftoff:usage.requestsPerMonth` declares.",
    )

    @field_validator("steps")
    @classmethod
    def _steps_rise_to_100(cls, steps: tuple[int, ...]) -> tuple[int, ...]:
        if not steps:
            raise ValueError("must list at least one percent, ending at 100")
        if list(steps) != sorted(set(steps)):
            raise ValueError("must rise strictly")
        if steps[-1] != 100:
            raise ValueError("must end at 100")
        return steps

    @model_validator(mode="after")
    def _soak_within_limit(self) -> ReleaseSettings:
        if self.max_soak_seconds is not None and self.max_soak_seconds < self.soak_seconds:
            raise ValueError(
                f"maxSoakSeconds: {self.max_soak_seconds} is below soakSeconds {self.soak_seconds}"
            )
        return self

    @property
    def wait_limit_seconds(self) -> int:
        """How long a step may soak in all, waiting for enough requests."""
        return self.max_soak_seconds if self.max_soak_seconds is not None else 3 * self.soak_seconds


def parse(raw: object, *, cloud: bool = True) -> tuple[ReleaseSettings, list[str]]:
    """Settings from stack config, and every problem named by its key (`liftoff:release.steps`)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return ReleaseSettings(), [f"{KEY}: must be a mapping"]
    problems: list[str] = []
    settings = ReleaseSettings()
    try:
        settings = ReleaseSettings.model_validate(raw, by_alias=True, by_name=False)
    except ValidationError as error:
        problems = [_problem(dict(e)) for e in error.errors()]
    soak = raw.get("soakSeconds", settings.soak_seconds)
    if cloud and isinstance(soak, int) and soak < CLOUD_MIN_SOAK_SECONDS:
        problems.append(
            f"{KEY}.soakSeconds: {soak} is shorter than Cloud Monitoring's ingestion"
            f" delay; use at least {CLOUD_MIN_SOAK_SECONDS}"
        )
    return settings, problems


def _problem(error: Mapping[str, Any]) -> str:
    """One pydantic error as `liftoff:release.<key>: <what is wrong> (got <value>)`."""
    location = ".".join(str(part) for part in error.get("loc", ()) if not isinstance(part, int))
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if not location:
        # A model validator's message starts with the key it is about.
        location, _, message = message.removeprefix("Value error, ").partition(": ")
        return f"{KEY}.{location}: {message}"
    return f"{KEY}.{location}: {message} (got {error.get('input')!r})"
