"""`make dev`: PostgreSQL, Redis, migrations, the API and the worker on loopback, under one supervisor.

Honcho supervises the processes: Ctrl-C or SIGTERM stops all of them, and so does any one
of them exiting. Data lives in .local/ and survives restarts.

`--scale on-demand` (`make dev SCALE=on-demand`) runs the worker pool as the cloud's on-demand
pool runs: a `scaler` process (`python -m app scaler`, SCALER_POOL=local) in place of the fixed
worker, starting `python -m app worker` processes when the API wakes it or its own loop finds
work, each after a simulated instance start delay, and stopping them after the idle period.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from honcho.manager import Manager

from app.local.config import TENANTS, LocalConfig, LocalConfigError
from app.local.servers import LOOPBACK, port_is_free, private_dir
from app.local.token import mint_dev_token

READY_TIMEOUT = 120.0
STOPPED_BY_SIGNAL = {130, 143}
FIXED, ON_DEMAND = "fixed", "on-demand"
# The local scaler's settings unless the environment sets them: a reconcile every 2 s (Cloud
# Scheduler's minute would be a long wait on a laptop), down to zero after a minute without work,
# and a worker start that takes as long as a Cloud Run instance's might.
ON_DEMAND_DEFAULTS = {
    "SCALER_INTERVAL_SECONDS": "2",
    "SCALER_IDLE_SECONDS": "60",
    "SCALER_START_DELAY_SECONDS": "5",
}


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


def _pool_lines(config: LocalConfig, scale: str, scaler: dict[str, str]) -> str:
    if scale == FIXED:
        return f"    Worker: http://{LOOPBACK}:{config.worker_port}/metrics"
    return (
        f"    Workers: on demand, started by the scaler (http://{LOOPBACK}:{config.scaler_port}/health)\n"
        f"      start delay {float(scaler['SCALER_START_DELAY_SECONDS']):g} s (SCALER_START_DELAY_SECONDS),"
        f" down to zero after {float(scaler['SCALER_IDLE_SECONDS']):g} s idle (SCALER_IDLE_SECONDS),"
        f" reconcile every {float(scaler['SCALER_INTERVAL_SECONDS']):g} s"
    )


def _banner(config: LocalConfig, token: str, scale: str = FIXED, scaler: dict[str, str] | None = None) -> str:
    env_file = str(config.env_file)
    if config.env_file.is_relative_to(Path.cwd()):
        env_file = os.path.relpath(config.env_file)
    return f"""
==> Liftoff is running on this machine. Ctrl-C stops everything.

    API: {config.api_url}   (docs: {config.api_url}/docs)
{_pool_lines(config, scale, scaler or {})}
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


def _announce_when_ready(config: LocalConfig, banner: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{config.api_url}/ready", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    print(banner, flush=True)
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


def _port_problem(config: LocalConfig, scale: str = FIXED) -> str | None:
    """Why the configured ports cannot be used, if they cannot."""
    # On demand, the scaler listens where the fixed worker would; its workers take free ports.
    pool = ("worker", ("LIFTOFF_WORKER_PORT", config.worker_port))
    if scale == ON_DEMAND:
        pool = ("scaler", ("LIFTOFF_SCALER_PORT", config.scaler_port))
    ports = {
        "API": ("LIFTOFF_API_PORT", config.api_port),
        pool[0]: pool[1],
        "Postgres": ("LIFTOFF_PG_PORT", config.pg_port),
        "Redis": ("LIFTOFF_REDIS_PORT", config.redis_port),
    }
    if len({port for _, port in ports.values()}) != len(ports):
        return f"the API, {pool[0]}, Postgres and Redis ports must differ"
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


def scaler_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The local scaler's settings: ON_DEMAND_DEFAULTS, overridden by the environment."""
    return {name: environ.get(name, default) for name, default in ON_DEMAND_DEFAULTS.items()}


def _supervise(config: LocalConfig, env: dict[str, str], scale: str = FIXED) -> Manager:
    """The four processes of the local system under one honcho manager."""
    manager = Manager()
    cwd = str(Path.cwd())
    manager.add_process("postgres", _server("postgres", config.pg_dir, config.pg_port), env=env, cwd=cwd)
    manager.add_process("redis", _server("redis", config.redis_dir, config.redis_port), env=env, cwd=cwd)
    if scale == FIXED:
        manager.add_process("api", _command("-m", "app.local.bootstrap"), env=env, cwd=cwd)
        # The worker waits for the API's bootstrap (migrations) by waiting for the API itself.
        worker_env = {**env, "PORT": str(config.worker_port)}
        manager.add_process(
            "worker", _command("-m", "app.local.bootstrap", "--worker"), env=worker_env, cwd=cwd
        )
        return manager
    # On demand: the API wakes the scaler when it accepts a job, and the scaler (after the same
    # wait for the API's bootstrap) starts worker processes, in its own process group, so that
    # the supervisor's signals reach them too.
    api_env = {**env, "WORKER_WAKE_URL": f"{config.scaler_url}/wake"}
    manager.add_process("api", _command("-m", "app.local.bootstrap"), env=api_env, cwd=cwd)
    scaler_env = {
        **env,
        **scaler_settings(env),
        "SCALER_POOL": "local",
        "PORT": str(config.scaler_port),
    }
    manager.add_process("scaler", _command("-m", "app.local.bootstrap", "--scaler"), env=scaler_env, cwd=cwd)
    return manager


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make dev", description="Run the whole system on this machine.")
    parser.add_argument(
        "--scale",
        choices=(FIXED, ON_DEMAND),
        default=FIXED,
        help="fixed: one worker process; on-demand: a scaler starts workers from zero (SCALE=on-demand)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    scale = _arguments(argv).scale
    try:
        config = LocalConfig.from_env()
    except LocalConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problem = _port_problem(config, scale)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    private_dir(config.root)
    private_dir(config.redis_dir)
    secret = config.ensure_jwt_secret()
    app_env = config.app_env(secret)
    tokens = _dev_tokens(secret)
    _write_env(config, app_env, tokens)

    env = {**os.environ, **app_env, "PYTHONUNBUFFERED": "1"}
    manager = _supervise(config, env, scale)
    banner = _banner(config, tokens["demo"], scale, scaler_settings(env))
    threading.Thread(target=_announce_when_ready, args=(config, banner), daemon=True).start()
    threading.Thread(target=_stop_with_parent, daemon=True).start()
    manager.loop()
    # Stopped as asked (Ctrl-C, SIGTERM): a clean exit, not an error for make to report.
    return 0 if manager.returncode in STOPPED_BY_SIGNAL else (manager.returncode or 0)


if __name__ == "__main__":
    sys.exit(main())
