"""The Pulumi program: per-environment settings, and the wiring of components into a stack."""
