"""The local server wrappers: one start, wait and stop for PostgreSQL, Redis and PgBouncer."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from app.local.servers import LocalPgBouncer, LocalRedis, PortInUseError, ServerError, free_port
from tests.conftest import Servers

pytestmark = pytest.mark.integration


@dataclass
class BrokenRedis(LocalRedis):
    """A redis-server given an option it refuses, so it exits at once."""

    def command(self) -> list[str]:
        return [*super().command(), "--no-such-option", "1"]


def test_redis_starts_answers_and_stops_cleanly(tmp_path: Path):
    server = LocalRedis(tmp_path / "redis", free_port(), durable=False).start()
    try:
        assert redis.Redis.from_url(server.url()).ping()
        assert (tmp_path / "redis").stat().st_mode & 0o777 == 0o700
    finally:
        server.stop()
    assert server.process is not None
    assert server.process.returncode == 0
    server.stop()  # stopping a stopped server is a no-op


def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path, servers: Servers):
    with pytest.raises(PortInUseError, match=f"port {servers.postgres.port} "):
        LocalRedis(tmp_path / "redis", servers.postgres.port).start()
    assert not (tmp_path / "redis").exists()


def test_a_server_that_exits_at_start_is_an_error_naming_it(tmp_path: Path):
    server = BrokenRedis(tmp_path / "redis", free_port())
    with pytest.raises(ServerError, match=r"redis on port \d+ exited with 1"):
        server.start(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_a_missing_pgbouncer_is_an_error_naming_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("app.local.servers.PGBOUNCER_PATHS", (str(tmp_path / "pgbouncer"),))
    server = LocalPgBouncer(tmp_path / "pgbouncer-data", free_port(), server_port=free_port())
    with pytest.raises(ServerError, match=r"apt-get install -y pgbouncer"):
        server.start()
    assert server.process is None
