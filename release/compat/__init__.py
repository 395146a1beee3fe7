"""The schema compatibility gate: the code at BASE against the schema HEAD's migrations produce.

`make compat BASE=<ref>` (`python -m release.compat`) and, in process, `check` and
`CompatSession` (docs/schema-changes.md).
"""

from release.compat.gate import CompatSession, check
from release.compat.report import (
    EXIT_COMPATIBLE,
    EXIT_GATE_FAILED,
    EXIT_INCOMPATIBLE,
    EXIT_USAGE,
    CompatReport,
    Finding,
    GateError,
    MigrationRef,
    UsageError,
)

__all__ = [
    "EXIT_COMPATIBLE",
    "EXIT_GATE_FAILED",
    "EXIT_INCOMPATIBLE",
    "EXIT_USAGE",
    "CompatReport",
    "CompatSession",
    "Finding",
    "GateError",
    "MigrationRef",
    "UsageError",
    "check",
]
