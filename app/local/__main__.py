"""`make dev`: PostgreSQL, Redis, migrations and the API on loopback, under one supervisor.

Honcho supervises the processes: Ctrl-C or SIGTERM stops all of them, and so does any one
of them exiting. Data lives in .local/ and survives restarts.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

from honcho.manager import Manager

from app.local.config import TENANTS, LocalConfig, LocalConfigError
from app.local.servers import LOOPBACK, port_is_free, private_dir
from app.local.token import mint_dev_token

READY_TIMEOUT = 120.0
STOPPED_BY_SIGNAL = {130, 143}


def _command(*args: str) -> str:
    return shlex.join([sys.executable, *args])


def _write_env(config: LocalConfig, env: dict[str, str], tokens: dict[str, str]) -> None:
    lines = [
        "# Written by `make dev`. Load it with: set -a; . .local/dev.env; set +a",
        f"LIFTOFF_API_URL={config.api_url}",
        *(f"{name}={value}" for name, value in env.items() if name not in {"HOST", "PORT", "LOG_FORMAT"}),
        f"LIFTOFF_DEV_TOKEN={tokens['demo']}",
        f"LIFTOFF_DEV_TOKEN_OTHER={tokens['other']}",
    ]
    fd = os.open(config.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")


def _banner(config: LocalConfig, token: str) -> str:
    env_file = str(config.env_file)
    if config.env_file.is_relative_to(Path.cwd()):
        env_file = os.path.relpath(config.env_file)
    return f"""
==> Liftoff is running on this machine. Ctrl-C stops everything.

    API: {config.api_url}   (docs: {config.api_url}/docs)
    Worker: http://{LOOPBACK}:{config.worker_port}/metrics
    Postgres: {config.database_url}
    Redis: {config.redis_url}
    Settings and tokens: {env_file}

    Dev token for the "Demo" tenant (a second tenant's is LIFTOFF_DEV_TOKEN_OTHER in {env_file}):
    {token}

    Try it:
      set -a; . {env_file}; set +a
      curl -s -X POST $LIFTOFF_API_URL/v1/generations \\
        -H "Authorization: Bearer $LIFTOFF_DEV_TOKEN" -H 'Content-Type: application/json' \\
        -d '{{"prompt": "Write a haiku about rockets"}}'
      curl -s $LIFTOFF_API_URL/v1/generations -H "Authorization: Bearer $LIFTOFF_DEV_TOKEN"
"""


def _announce_when_ready(config: LocalConfig, token: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{config.api_url}/ready", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    print(_banner(config, token), flush=True)
                    return
        except OSError:
            pass
        time.sleep(0.5)
    print(f"==> the API did not become ready within {READY_TIMEOUT:.0f}s; see the output above", flush=True)


def _stop_with_parent() -> None:
    # `make` forwards SIGTERM to us, but if it is killed outright we must not outlive it.
    parent = os.getppid()
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _port_problem(config: LocalConfig) -> str | None:
    """Why the configured ports cannot be used, if they cannot."""
    ports = {
        "API": ("LIFTOFF_API_PORT", config.api_port),
        "worker": ("LIFTOFF_WORKER_PORT", config.worker_port),
        "Postgres": ("LIFTOFF_PG_PORT", config.pg_port),
        "Redis": ("LIFTOFF_REDIS_PORT", config.redis_port),
    }
    if len({port for _, port in ports.values()}) != len(ports):
        return "the API, worker, Postgres and Redis ports must differ"
    for what, (variable, port) in ports.items():
        if not port_is_free(port):
            return (
                f"port {port} on {LOOPBACK} ({what}) is already in use."
                f" Stop whatever holds it, or choose another with {variable}=<port> make dev"
            )
    return None


def _dev_tokens(secret: str) -> dict[str, str]:
    """A dev token for each demo tenant, signed with the local JWT secret."""
    return {
        name: mint_dev_token(
            secret,
            user_id=user_id,
            org_id=org_id,
            tenant_claim=os.environ.get("TENANT_CLAIM", "app_metadata.organization_id"),
        )
        for name, (_, org_id, user_id) in TENANTS.items()
    }


def _server(kind: str, data_dir: Path, port: int) -> str:
    return _command("-m", "app.local.servers", kind, "--data-dir", str(data_dir), "--port", str(port))


def _supervise(config: LocalConfig, env: dict[str, str]) -> Manager:
    """The four processes of the local system under one honcho manager."""
    manager = Manager()
    cwd = str(Path.cwd())
    manager.add_process("postgres", _server("postgres", config.pg_dir, config.pg_port), env=env, cwd=cwd)
    manager.add_process("redis", _server("redis", config.redis_dir, config.redis_port), env=env, cwd=cwd)
    manager.add_process("api", _command("-m", "app.local.bootstrap"), env=env, cwd=cwd)
    # The worker waits for the API's bootstrap (migrations) by waiting for the API itself.
    worker_env = {**env, "PORT": str(config.worker_port)}
    manager.add_process("worker", _command("-m", "app.local.bootstrap", "--worker"), env=worker_env, cwd=cwd)
    return manager


def main() -> int:
    try:
        config = LocalConfig.from_env()
    except LocalConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problem = _port_problem(config)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    private_dir(config.root)
    private_dir(config.redis_dir)
    secret = config.ensure_jwt_secret()
    app_env = config.app_env(secret)
    tokens = _dev_tokens(secret)
    _write_env(config, app_env, tokens)

    manager = _supervise(config, {**os.environ, **app_env, "PYTHONUNBUFFERED": "1"})
    threading.Thread(target=_announce_when_ready, args=(config, tokens["demo"]), daemon=True).start()
    threading.Thread(target=_stop_with_parent, daemon=True).start()
    manager.loop()
    # Stopped as asked (Ctrl-C, SIGTERM): a clean exit, not an error for make to report.
    return 0 if manager.returncode in STOPPED_BY_SIGNAL else (manager.returncode or 0)


if __name__ == "__main__":
    sys.exit(main())
