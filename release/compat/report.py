"""What one compatibility check found: the migrations, the findings, the verdict and its exit
code, and the errors of a gate that could not check."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

EXIT_COMPATIBLE = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2
EXIT_INCOMPATIBLE = 3


class UsageError(ValueError):
    """The gate was asked something it cannot check: a ref git does not know, a missing tree."""


class GateError(RuntimeError):
    """The gate itself failed (a server did not start, BASE could not be prepared)."""


@dataclass(frozen=True)
class MigrationRef:
    """A migration HEAD adds over BASE."""

    revision: str
    file: str
    phase: str

    def __str__(self) -> str:
        return f"{self.revision} ({self.file}, {self.phase})"


@dataclass(frozen=True)
class Finding:
    """One way the old code fails on the new schema."""

    # "migrate", "base.<step>" (BASE's code on the migrated schema), "head.<step>" (HEAD's code
    # on what BASE wrote) or "base.read-head" (BASE's code on what HEAD wrote).
    step: str
    error: str
    # The migrations concerned: the one that failed, or all those applied before the step.
    migrations: tuple[str, ...] = ()


@dataclass
class CompatReport:
    """What one check found; `exit_code` is what `make compat` exits with."""

    base: str
    base_commit: str
    head: str
    migrations: list[MigrationRef] = field(default_factory=list)
    held: list[MigrationRef] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # Set when the gate itself failed: nothing is known about compatibility then.
    error: str | None = None

    @property
    def compatible(self) -> bool:
        return self.error is None and not self.findings

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return EXIT_GATE_FAILED
        return EXIT_INCOMPATIBLE if self.findings else EXIT_COMPATIBLE

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["compatible"] = self.compatible
        data["exit_code"] = self.exit_code
        return data

    def text(self) -> str:
        verdict = "gate failed" if self.error else "compatible" if self.compatible else "INCOMPATIBLE"
        lines = [
            f"compat: BASE {self.base} ({self.base_commit[:12]}) on HEAD {self.head}'s schema: {verdict}"
        ]
        applied = ", ".join(map(str, self.migrations)) or "none (no schema change)"
        lines.append(f"  migrations applied over BASE's schema: {applied}")
        if self.held:
            lines.append(
                "  contract migrations held, as a release holds them until no rollback target needs"
                f" the old schema: {', '.join(map(str, self.held))}"
            )
        for finding in self.findings:
            names = ", ".join(self._file_of(rev) for rev in finding.migrations) or "-"
            lines.append(f"  FAIL {finding.step} (migrations: {names}): {finding.error}")
        if self.error:
            lines.append(f"  error: {self.error}")
        elif self.compatible:
            lines.append(f"  passed: {', '.join(self.steps)}")
        lines.append(f"  took {self.seconds:.1f}s")
        return "\n".join(lines)

    def _file_of(self, revision: str) -> str:
        return next((f"{m.revision} ({m.file})" for m in self.migrations if m.revision == revision), revision)


def read_json(data: Mapping[str, Any]) -> CompatReport:
    """A report from its `to_json` form (what `--json` prints), for the controller."""
    return CompatReport(
        base=data["base"],
        base_commit=data["base_commit"],
        head=data["head"],
        migrations=[MigrationRef(**m) for m in data["migrations"]],
        held=[MigrationRef(**m) for m in data["held"]],
        findings=[Finding(f["step"], f["error"], tuple(f["migrations"])) for f in data["findings"]],
        steps=list(data["steps"]),
        seconds=float(data["seconds"]),
        error=data["error"],
    )
