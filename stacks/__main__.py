"""Entry point of `pulumi up`: read the settings, wire the stack, export its outputs."""

import sys
from pathlib import Path

# Pulumi runs this file with stacks/ on sys.path; the program imports from the project root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pulumi  # noqa: E402

from stacks.program import build  # noqa: E402
from stacks.settings import load  # noqa: E402

for key, value in build(load()).items():
    pulumi.export(key, value)
