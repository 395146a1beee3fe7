"""The Pulumi program: per-environment settings, the wiring of components into a stack, and the
release plan and ledger each step of a release declares."""
