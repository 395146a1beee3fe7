"""Stage a release: rewrite a stack file so the new revision ships at 0 % under `candidate`.

    python stacks/release.py stage --stack prod --stable liftoff-prod-api-3dfa7901-826fedc

The deploy job runs `pulumi up` with the staged file, smoke-tests the candidate's tag URL,
then restores the file as committed and runs `pulumi up` again to move the traffic. Only the
CI runner's copy of the file is changed; the committed traffic is what the stack ends with.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def stage(document: dict[str, Any], stable: str) -> dict[str, Any]:
    """The stack document with the API's traffic on `stable`, and the latest revision at 0 %."""
    config = dict(document.get("config") or {})
    api = dict(config.get("liftoff:api") or {})
    api["traffic"] = [
        {"revision": stable, "percent": 100, "tag": "stable"},
        {"revision": "latest", "percent": 0, "tag": "candidate"},
    ]
    config["liftoff:api"] = api
    return {**document, "config": config}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stacks/release.py", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    staging = commands.add_parser("stage", help="ship the next revision at 0 % beside the stable one")
    staging.add_argument("--stack", required=True, choices=["staging", "prod"])
    staging.add_argument("--stable", required=True, help="the revision serving now (output api_revision)")
    args = parser.parse_args(argv)
    prefix = f"liftoff-{args.stack}-api-"
    if not args.stable.startswith(prefix):
        print(f"error: --stable {args.stable!r} is not a revision of {prefix[:-1]}", file=sys.stderr)
        return 2
    path = ROOT / f"Pulumi.{args.stack}.yaml"
    document = yaml.safe_load(path.read_text()) or {}
    path.write_text(yaml.safe_dump(stage(document, args.stable), sort_keys=False))
    print(f"staged {path.name}: {args.stable} keeps 100 %, the new revision ships at 0 % as candidate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
