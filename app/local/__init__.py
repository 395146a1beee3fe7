"""The local system: the whole app on this machine, on embedded PostgreSQL and Redis."""
