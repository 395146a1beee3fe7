"""Can CI deploy this stack file as committed? It must carry its secrets, encrypted, and no placeholder.

    python tools/deployable.py [--stack staging --stack prod]

CI holds no secret of its own: everything `pulumi up` needs is in Pulumi.<stack>.yaml, the
secrets as `secure:` ciphertext under a `gcpkms://` secrets provider whose key the CI identities
may use (see stacks/bootstrap). A stack initialised on a laptop and not committed afterwards,
or a secret set only locally, fails in CI with "missing required configuration"; this check names
each such gap before any cloud call. Exit status 1 lists every problem by stack and key.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
STACKS = ("staging", "prod")
# Secrets every stack needs; the providers read them from the stack's config.
ALWAYS = (
    "supabase:accessToken",  # the Supabase Management API (components/supabase_api.py)
    "upstash:apiKey",  # the Upstash provider, with upstash:email
)
REPLACE = re.compile(r"#\s*REPLACE\b")
KEY = re.compile(r"^\s*([\w.-]+(?::[\w.-]+)?)\s*:")


def required_secrets(config: Mapping[str, Any]) -> list[str]:
    """The secret keys a stack with this (plain) config cannot deploy without."""
    wanted = set(ALWAYS)
    if (config.get("liftoff:app") or {}).get("aiProvider", "openai") == "openai":
        wanted.add("liftoff:openaiApiKey")
    if (config.get("liftoff:supabase") or {}).get("mode") == "adopt":
        wanted.add("liftoff:supabaseDbPassword")
    return sorted(wanted)


def problems(path: Path) -> list[str]:
    """What keeps CI from deploying the stack file at `path`; empty when nothing does."""
    if not path.exists():
        return [f"{path.name}: missing (pulumi stack init, then commit the file)"]
    text = path.read_text()
    document = yaml.safe_load(text) or {}
    config: dict[str, Any] = document.get("config") or {}
    found: list[str] = []
    provider = str(document.get("secretsprovider") or "")
    if not provider:
        found.append(
            "secretsprovider: missing"
            " (pulumi stack init --secrets-provider gcpkms://..., then commit the file)"
        )
    elif not provider.startswith("gcpkms://"):
        found.append(
            f"secretsprovider: {provider.split('?')[0]!r} is not gcpkms://: CI has no passphrase or key"
        )
    if not document.get("encryptedkey"):
        found.append("encryptedkey: missing (written by pulumi stack init with the KMS provider; commit it)")
    for key in required_secrets(config):
        value = config.get(key)
        if value is None:
            found.append(f"{key}: missing (pulumi config set --secret {key} ...)")
        elif not (isinstance(value, Mapping) and "secure" in value):
            found.append(f"{key}: in clear text; set it with --secret so the file holds only ciphertext")
    for number, line in enumerate(text.splitlines(), start=1):
        if REPLACE.search(line) and not line.lstrip().startswith("#"):
            match = KEY.match(line)
            key = match.group(1) if match else line.strip()
            found.append(f"{key}: still the placeholder marked REPLACE (line {number})")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tools/deployable.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stack", action="append", choices=STACKS, help="default: every stack")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    failed = False
    for stack in args.stack or STACKS:
        found = problems(args.root / f"Pulumi.{stack}.yaml")
        failed = failed or bool(found)
        status = "deployable by CI" if not found else "not deployable by CI:"
        print(f"{stack}: {status}")
        for problem in found:
            print(f"  - {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
