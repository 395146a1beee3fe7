"""Squawk over each migration's SQL (`make lint`): rollback-incompatible changes only in contract
migrations; locking hazards reported.

`python -m release.compat.lint [--migrations DIR]` renders each revision's upgrade as
SQL with Alembic's offline mode (`alembic upgrade <prev>:<rev> --sql`), lints all of them in one
run of Squawk (the `squawk-cli` wheel's binary) and judges each finding by the revision's phase:

- a rule that signals a change a rollback target cannot survive (a dropped or renamed column or
  table, a new required column, a type change, a new NOT NULL) fails an expand migration, and
  is only noted in a contract one, which a release holds until no rollback target needs the old
  schema;
- a locking hazard (an index built without CONCURRENTLY, a constraint validated under an
  ACCESS EXCLUSIVE lock, ...) is a warning: it blocks traffic while it runs, whichever phase;
- a revision may exempt itself from a rule with `squawk_ignore = {"rule": "why"}`, the reason
  printed with each run.

Squawk reads SQL only: a REVOKE, a dropped function or a tightened CHECK is the compat gate's to
find (`make compat`), not this one's.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from alembic import command

from app.migrate import Migration, Phase, alembic_config, migrations, script_directory

# Changes the code a rollback returns to cannot survive: held for a contract migration.
ROLLBACK_INCOMPATIBLE = frozenset(
    {
        "ban-drop-column",
        "ban-drop-table",
        "ban-drop-database",
        "ban-truncate-cascade",
        "renaming-column",
        "renaming-table",
        "adding-required-field",
        "adding-not-nullable-field",
        "changing-column-type",
    }
)
# Style advice rather than hazards of the change itself; the timeouts would flag every revision,
# since env.py sets no lock_timeout (docs/schema-changes.md says why and what to do instead).
EXCLUDED = (
    "prefer-bigint-over-int",
    "prefer-bigint-over-smallint",
    "prefer-identity",
    "prefer-text-field",
    "prefer-timestamptz",
    "ban-char-field",
    "require-lock-timeout",
    "require-statement-timeout",
)
# Offline mode needs a dialect, never a server.
OFFLINE_DSN = "postgresql://offline@localhost/offline"


@dataclass(frozen=True)
class Violation:
    """One Squawk finding in one revision's SQL."""

    migration: Migration
    rule: str
    line: int
    message: str
    # "error" fails the lint; "warning" and "note" are printed.
    level: str
    why: str = ""

    def __str__(self) -> str:
        reason = f" [{self.why}]" if self.why else ""
        return (
            f"{self.migration.name} ({self.migration.phase}): {self.level}: {self.rule}"
            f" (line {self.line} of its SQL): {self.message}{reason}"
        )


def render_sql(migration: Migration, location: Path | None = None) -> str:
    """The SQL that upgrading to `migration` from the revision before it runs."""
    buffer = io.StringIO()
    config = alembic_config(OFFLINE_DSN, location)
    config.output_buffer = buffer
    command.upgrade(config, f"{migration.down_revision or 'base'}:{migration.revision}", sql=True)
    return buffer.getvalue()


def squawk_binary() -> str:
    found = shutil.which("squawk", path=str(Path(sys.executable).parent)) or shutil.which("squawk")
    if found is None:
        raise FileNotFoundError("squawk is not installed: run `make install` (the squawk-cli wheel)")
    return found


def judge(migration: Migration, rule: str, ignored: Mapping[str, str]) -> tuple[str, str]:
    """The level of a finding of `rule` in `migration`, and the reason when it is not an error."""
    if rule in ignored:
        return "note", f"exempted by the revision: {ignored[rule]}"
    if rule in ROLLBACK_INCOMPATIBLE:
        if migration.phase is Phase.CONTRACT:
            return "note", "a contract migration: held until no rollback target needs the old schema"
        return (
            "error",
            "a rollback target cannot survive it: make it a contract migration (docs/schema-changes.md)",
        )
    return "warning", "a locking hazard"


def lint(location: Path | None = None) -> list[Violation]:
    """Every finding over every revision of the migrations at `location` (default: the app's)."""
    found = migrations(script_directory(location))
    with tempfile.TemporaryDirectory(prefix="liftoff-squawk-") as tmp:
        files: dict[str, Migration] = {}
        for migration in found:
            path = Path(tmp) / f"{migration.path.stem}.sql"
            path.write_text(render_sql(migration, location))
            files[str(path)] = migration
        result = subprocess.run(  # noqa: S603
            [squawk_binary(), "--reporter", "json", f"--exclude={','.join(EXCLUDED)}", *files],
            capture_output=True,
            text=True,
            check=False,
        )
    try:
        reported = json.loads(result.stdout)
    except json.JSONDecodeError:
        # Findings or none, Squawk prints a JSON list: anything else is Squawk failing.
        raise RuntimeError(f"squawk failed ({result.returncode}): {result.stderr or result.stdout}") from None
    violations: list[Violation] = []
    for item in reported:
        migration = files[item["file"]]
        ignored = _ignored(migration)
        level, why = judge(migration, item["rule_name"], ignored)
        violations.append(
            Violation(migration, item["rule_name"], int(item["line"]), item["message"], level, why)
        )
    return violations


def _ignored(migration: Migration) -> dict[str, str]:
    """The revision's `squawk_ignore`, read from its source (a literal: rule -> reason)."""
    for node in ast.parse(migration.path.read_text()).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "squawk_ignore" for t in targets) and node.value:
                value = ast.literal_eval(node.value)
                if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
                    raise ValueError(
                        f"{migration.name}: squawk_ignore must map each rule to the reason it is exempted"
                    )
                return {str(k): v for k, v in value.items()}
    return {}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m release.compat.lint", description=__doc__)
    parser.add_argument("--migrations", type=Path, help="a migrations folder (default: the app's)")
    args = parser.parse_args(argv)
    violations = lint(args.migrations)
    for violation in violations:
        print(violation)
    errors = sum(v.level == "error" for v in violations)
    warnings = sum(v.level == "warning" for v in violations)
    count = len(migrations(script_directory(args.migrations)))
    print(
        f"squawk: {count} migrations, {errors} rollback-incompatible changes in expand migrations,"
        f" {warnings} warnings"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
