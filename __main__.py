"""Entry point of `pulumi up`: read the settings, wire the stack, export its outputs.

Pulumi.yaml names no `main`, so the program directory is the project root: the language host
runs this file with the root on sys.path, and the program and its dynamic providers both find
the `.venv` that Pulumi.yaml names at the root (tools/runtime.py).
"""

import pulumi

from stacks.program import build
from stacks.settings import load

for key, value in build(load()).items():
    pulumi.export(key, value)
