"""What an environment's resources are called."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkloadNames:
    """What an environment's resources are called: every name starts with its prefix.

    The prefix carries the environment, so two stacks can share a GCP project: every id that must
    be unique in a project (or in a project's region) starts with it, from the service accounts,
    secrets and log-based metrics the components name after it to the Cloud Run workloads and the
    image repository named here.
    """

    prefix: str

    @classmethod
    def of(cls, environment: str) -> WorkloadNames:
        return cls(f"liftoff-{environment}")

    @property
    def repository(self) -> str:
        """The Artifact Registry repository of the stack's images."""
        return self.prefix

    @property
    def api(self) -> str:
        return f"{self.prefix}-api"

    @property
    def worker(self) -> str:
        return f"{self.prefix}-worker"

    @property
    def migrations(self) -> str:
        return f"{self.prefix}-migrate"

    @property
    def retention(self) -> str:
        return f"{self.prefix}-cleanup"

    @property
    def scaler(self) -> str:
        """The worker pool's scaler service (components/scaler.py)."""
        return f"{self.prefix}-scaler"
