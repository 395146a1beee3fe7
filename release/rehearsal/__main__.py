"""`make rehearse [FAULT=api|worker] [RATE=N]`: a release of the real app on this machine, through
the real controller.

    python -m release.rehearsal [--fault api|worker] [--rate N] [--migration expand|breaking]
        [--fault-ratio R] [--fault-delay-ms MS] [--fault-job-ratio R] [--fault-job-delay-ms MS]

Exits as the release controller does: 0 promoted, 3 rolled back (the breached gate is named);
1 when the rehearsal itself went wrong (a request failed because traffic moved, the traffic
did not end where the controller said, a job was lost or ran twice, or a server did not start).
With `--rate 0` no load is sent: every step is judged on the controller's own probes. With
`--migration` the candidate carries a schema change: `expand` is released as usual, `breaking`
(a renamed column) is refused by the schema gate before it migrates anything, exit 2.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from app.local.servers import ServerError
from release.controller import EXIT_ERROR, EXIT_USAGE
from release.rehearsal.load import DEFAULT_RATE
from release.rehearsal.migrations import PLANTS
from release.rehearsal.run import FAULTS, Rehearsal, describe, profile

INTERRUPTED = 130


def _faults(args: argparse.Namespace) -> dict[str, str]:
    faults = dict(FAULTS[args.fault]) if args.fault else {}
    for option, variable in OVERRIDES.items():
        value = getattr(args, option)
        if value is not None:
            faults[variable] = str(value)
    return faults


# The fine-grained options, by the setting of the candidate they set.
OVERRIDES = {
    "fault_ratio": "FAULT_ERROR_RATIO",
    "fault_delay_ms": "FAULT_DELAY_MS",
    "fault_job_ratio": "FAULT_JOB_ERROR_RATIO",
    "fault_job_delay_ms": "FAULT_JOB_DELAY_MS",
}


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM (make killed, a CI timeout) unwinds like Ctrl-C, so every process is stopped.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m release.rehearsal", description=__doc__)
    parser.add_argument(
        "--fault",
        choices=sorted(FAULTS),
        help="api: the candidate API fails one request in five; worker: the candidate worker fails"
        " three attempts in ten",
    )
    parser.add_argument("--fault-ratio", type=float, help="the candidate API's FAULT_ERROR_RATIO (0..1)")
    parser.add_argument("--fault-delay-ms", type=int, help="the candidate API's FAULT_DELAY_MS")
    parser.add_argument("--fault-job-ratio", type=float, help="the candidate worker's FAULT_JOB_ERROR_RATIO")
    parser.add_argument("--fault-job-delay-ms", type=int, help="the candidate worker's FAULT_JOB_DELAY_MS")
    parser.add_argument("--dir", type=Path, default=Path(".local/rehearsal"), help="data and logs")
    parser.add_argument(
        "--migration",
        choices=sorted(PLANTS),
        help="the candidate carries a migration: expand (a new nullable column) or breaking (a"
        " renamed column, refused before any traffic moves)",
    )
    parser.add_argument(
        "--rate", type=float, default=DEFAULT_RATE, help="requests per second of load (0: none, probes only)"
    )
    args = parser.parse_args(argv)
    for option in ("fault_ratio", "fault_job_ratio"):
        value = getattr(args, option)
        if value is not None and not 0 <= value <= 1:
            parser.error(f"--{option.replace('_', '-')} must be from 0 to 1")
    for option in ("fault_delay_ms", "fault_job_delay_ms"):
        value = getattr(args, option)
        if value is not None and value < 0:
            parser.error(f"--{option.replace('_', '-')} must be 0 or more")
    if args.rate < 0:
        parser.error("--rate must be 0 or more")
    signal.signal(signal.SIGTERM, _interrupt)
    faults = _faults(args)
    settings = profile()
    print(f"==> starting the local system in {args.dir} (logs in {args.dir / 'logs'})", flush=True)
    try:
        with Rehearsal.running(args.dir, rate=args.rate) as rehearsal:
            load = f"{args.rate:g} requests/s" if args.rate else "no load (probes only)"
            print(f"==> stable {rehearsal.stable.api} serves 100 % at {load}", flush=True)
            result = rehearsal.release(
                faults, settings, out=lambda line: print(f"    {line}", flush=True), migration=args.migration
            )
    except KeyboardInterrupt:
        print("interrupted: every process of the rehearsal was stopped", file=sys.stderr)
        return INTERRUPTED
    except (ServerError, TimeoutError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print("\n".join(describe(result)), flush=True)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
