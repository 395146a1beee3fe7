"""Fixtures of the tools' tests: the program's own, since the tools render and price the program."""

# A stack file rendered with no resource registered, shared with tests/stacks.
from tests.stacks.conftest import registrations  # noqa: F401
