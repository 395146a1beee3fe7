"""Entry points of the image: `python -m app api|worker|migrate|cleanup|scaler`."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from app.settings import Role, SettingsError, get_settings

ROLES = {
    "api": Role.API,
    "worker": Role.WORKER,
    "migrate": Role.MIGRATE,
    "cleanup": Role.WORKER,
    "scaler": Role.SCALER,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("api", help="serve the HTTP API on $HOST:$PORT")
    commands.add_parser("worker", help="run generation jobs until SIGTERM")
    migrate = commands.add_parser(
        "migrate",
        help="alembic upgrade over MIGRATIONS_DATABASE_URL, holding contract migrations unless asked",
    )
    migrate.add_argument(
        "--contract",
        choices=("hold", "run"),
        default="hold",
        help="hold (default): stop before the first contract migration, which a release runs only once"
        " no rollback target needs the old schema; run: migrate to head",
    )
    migrate.add_argument(
        "--allow-contract",
        action="append",
        default=[],
        metavar="REVISION",
        help="with --contract hold, a contract migration that may run (repeatable)",
    )
    commands.add_parser(
        "scaler", help="serve the worker pool's scaler (POST /wake, /reconcile) on $HOST:$PORT"
    )
    cleanup = commands.add_parser("cleanup", help="delete generation_logs older than RETENTION_DAYS")
    cleanup.add_argument("--days", type=int, help="override RETENTION_DAYS")
    cleanup.add_argument("--batch", type=int, default=5_000, help="rows per transaction")
    args = parser.parse_args(argv)
    try:
        settings = get_settings().require(ROLES[args.command])
        if args.command == "worker":
            settings.require_revision()
    except (SettingsError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from app.core.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    if args.command == "migrate":
        import structlog

        from app.migrate import apply_tenant_limits, upgrade

        held = upgrade(
            settings.secret("migrations_database_url"),
            hold_contract=args.contract == "hold",
            allowed_contract=args.allow_contract,
        )
        if held:
            structlog.get_logger("liftoff.migrate").warning(
                "contract migrations held",
                held=[f"{m.revision} ({m.name})" for m in held],
                reason="they run only once no rollback target needs the old schema (--contract run)",
            )
        apply_tenant_limits(settings.secret("migrations_database_url"), settings)
    elif args.command == "cleanup":
        from app.worker.retention import run_cleanup

        if (args.days is not None and args.days < 1) or args.batch < 1:
            parser.error("--days and --batch must be positive")
        run_cleanup(settings, days=args.days, batch=args.batch)
    elif args.command == "worker":
        from app.worker.runner import run_worker

        run_worker(settings)
    elif args.command == "scaler":
        import uvicorn

        from app.scaler.service import create_scaler_app

        uvicorn.run(create_scaler_app(settings), host=settings.host, port=settings.port, log_config=None)
    else:
        import uvicorn

        from app.core.server import guarded_protocol
        from app.main import create_app

        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            proxy_headers=True,
            timeout_graceful_shutdown=8,
            # Header size and the time a client may take to send a request are bounded here;
            # the body size by the app (413).
            http=guarded_protocol(settings.http_max_header_bytes, settings.http_request_timeout_seconds),
            h11_max_incomplete_event_size=settings.http_max_header_bytes,
            timeout_keep_alive=settings.http_keep_alive_seconds,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
