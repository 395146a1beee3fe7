"""Entry points of the image: `python -m app api|migrate`."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from app.settings import Role, SettingsError, get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    parser.add_argument("command", choices=["api", "migrate"])
    args = parser.parse_args(argv)
    try:
        settings = get_settings().require(Role(args.command))
    except (SettingsError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from app.core.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    if args.command == "migrate":
        from app.migrate import upgrade

        upgrade()
        return 0

    import uvicorn

    from app.main import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=8,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
