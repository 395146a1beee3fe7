"""Pulumi components for Liftoff. They know nothing of the app: the stack wires them to it."""
