"""The release controller rehearsed on this machine: two API revisions of the real app behind a
local weighted router, real HTTP load, gates read from each revision's own Prometheus `/metrics`."""
