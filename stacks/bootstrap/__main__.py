"""Entry point of the bootstrap stack (`pulumi up` in stacks/bootstrap)."""

import sys
from pathlib import Path

# Pulumi runs this directory's __main__.py; the program imports from the project root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pulumi  # noqa: E402

from stacks.bootstrap.program import build, load  # noqa: E402

for key, value in build(load()).items():
    pulumi.export(key, value)
