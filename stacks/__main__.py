"""Entry point of `pulumi up`: read the settings, wire the stack, export its outputs."""

import pulumi

from stacks.program import build
from stacks.settings import load

for key, value in build(load()).items():
    pulumi.export(key, value)
