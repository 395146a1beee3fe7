"""`make release` and `make rollback`: the canary controller against a stack on Google Cloud.

    python -m release release --stack prod [--retry] [--approve]
    python -m release rollback --stack prod [--further | --unfinished]
    python -m release audience --stack prod

Exit codes: 0 promoted (or nothing to release) or rolled back by hand; 2 refused (bad config,
traffic pinned in the stack file, a revision recorded as failed); 3 rolled back by a gate or
failed its smoke test; 4 paused before a step, awaiting approval; 1 anything else.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from release.cancel import CANCELLATION
from release.controller import EXIT_ERROR, EXIT_USAGE, Controller, Report
from release.source import source_commit
from stacks.settings import NAMESPACE, WorkloadNames, release_traffic_problems, usage_settings
from stacks.settings.release import KEY, ReleaseSettings, parse
from tools.render import stack_config

if TYPE_CHECKING:
    from release.cloud import CloudPorts

STACKS = ("staging", "prod")
# Keys that pin traffic by hand; a release would fight them, so it refuses to start.
PINS = (("liftoff:api", "traffic"), ("liftoff:worker", "split"))


class RealClock:
    """Wall-clock time; a wait ends early when the run is cancelled."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        CANCELLATION.sleep(seconds)


class TerminalApprover:
    """Asks at a terminal; approves everything when told to; otherwise has nobody to ask."""

    def __init__(self, approve_all: bool) -> None:
        self.approve_all = approve_all

    def approve(self, percent: int) -> bool | None:
        if self.approve_all:
            return True
        if not sys.stdin.isatty():
            return None
        answer = input(f"Go on to {percent} % of the traffic? [y/N/r(oll back)] ").strip().lower()
        if answer in ("y", "yes"):
            return True
        return False if answer in ("r", "n", "no") else None


def preflight(stack: str, config: Mapping[str, Any]) -> tuple[ReleaseSettings, list[str]]:
    """The stack's release settings, and what keeps a release from starting."""
    settings, problems = parse(config.get(KEY), cloud=True)
    if not problems:
        # The program's settings refuse these too, but only in the `pulumi up` that ships; refused here, the
        # release does not start.
        usage = usage_settings(config.get(f"{NAMESPACE}:usage"), [])
        problems += release_traffic_problems(settings, usage)
    for section, key in PINS:
        if key in (config.get(section) or {}):
            problems.append(
                f"{section}.{key}: Pulumi.{stack}.yaml pins the traffic by hand; remove it to let"
                " releases move the traffic (make rollback sends it back to the last good release)"
            )
    return settings, problems


def _controller(ports: CloudPorts, settings: ReleaseSettings, approve: bool) -> Controller:
    return Controller(
        source=source_commit(),
        settings=settings,
        live=ports.live,
        deployer=ports.deployer,
        metrics=ports.metrics,
        jobs=ports.jobs,
        smoke=ports.smoke,
        synthetic=ports.synthetic,
        schema=ports.schema,
        approver=TerminalApprover(approve),
        clock=RealClock(),
    )


def run(
    command: str,
    stack: str,
    settings: ReleaseSettings,
    *,
    retry: bool,
    resume: bool,
    approve: bool,
    further: bool,
    unfinished: bool = False,
) -> Report:
    """The release or the rollback, on the stack's Cloud Run through the Automation API."""
    from release.cloud import cloud_ports  # the Automation API and Google clients

    ports = cloud_ports(stack)
    try:
        controller = _controller(ports, settings, approve)
        if command == "rollback":
            return controller.rollback(further=further, unfinished=unfinished)
        return controller.release(retry=retry, resume=resume)
    finally:
        ports.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m release", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    release = commands.add_parser("release", help="ship, smoke-test and step the traffic behind the gates")
    release.add_argument("--stack", required=True, choices=STACKS)
    release.add_argument("--retry", action="store_true", help="retry revisions recorded as failed")
    release.add_argument("--approve", action="store_true", help="approve every remaining step")
    release.add_argument(
        "--resume", action="store_true", help="take an unfinished release on (otherwise it is superseded)"
    )
    rollback = commands.add_parser(
        "rollback", help="100 %% of the API and the worker to the last good release"
    )
    rollback.add_argument("--stack", required=True, choices=STACKS)
    how_far = rollback.add_mutually_exclusive_group()
    how_far.add_argument(
        "--further", action="store_true", help="roll back what serves even after the newest release was"
    )
    how_far.add_argument(
        "--unfinished",
        action="store_true",
        help="only a release left unfinished (paused, stopped, half rolled back); settled traffic stays",
    )
    audience = commands.add_parser("audience", help="the audience of ID tokens for the stack's API")
    audience.add_argument("--stack", required=True, choices=STACKS)
    args = parser.parse_args(argv)

    config = stack_config(args.stack)
    if args.command == "audience":
        print(WorkloadNames.of(str(config.get("liftoff:environment", args.stack))).api)
        return 0
    settings, problems = preflight(args.stack, config)
    if args.command == "rollback":
        # A rollback needs no release settings, and must work whatever the stack file says.
        problems = []
    if problems:
        print("error: cannot release " + args.stack + ":", *problems, sep="\n  - ", file=sys.stderr)
        return EXIT_USAGE
    if shutil.which("pulumi") is None:
        print("error: the Pulumi CLI is required (https://www.pulumi.com/docs/install/)", file=sys.stderr)
        return EXIT_USAGE
    CANCELLATION.install()
    try:
        report = run(
            args.command,
            args.stack,
            settings,
            retry=getattr(args, "retry", False),
            resume=getattr(args, "resume", False),
            approve=getattr(args, "approve", False),
            further=getattr(args, "further", False),
            unfinished=getattr(args, "unfinished", False),
        )
    except Exception as error:  # a live read or a credential failing before anything moved
        print(f"error: {args.command} {args.stack} stopped: {error}", file=sys.stderr)
        return EXIT_ERROR
    print(f"{args.command} {args.stack}: {report.summary()}")
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
