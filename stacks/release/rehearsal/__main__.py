"""`make rehearse [FAULT=1]`: a release of the real app on this machine, through the real controller.

    python -m stacks.release.rehearsal [--fault] [--fault-ratio R] [--fault-delay-ms MS]

Exits as the release controller does: 0 promoted, 3 rolled back (the breached gate is named);
1 when the rehearsal itself went wrong (a request failed because traffic moved, the traffic
did not end where the controller said, or a server did not start).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from app.local.servers import ServerError
from stacks.release.controller import EXIT_ERROR, EXIT_USAGE
from stacks.release.rehearsal.load import DEFAULT_RATE
from stacks.release.rehearsal.run import FAULT, Rehearsal, describe, profile

INTERRUPTED = 130


def _faults(args: argparse.Namespace) -> dict[str, str]:
    faults = dict(FAULT) if args.fault else {}
    if args.fault_ratio is not None:
        faults["FAULT_ERROR_RATIO"] = str(args.fault_ratio)
    if args.fault_delay_ms is not None:
        faults["FAULT_DELAY_MS"] = str(args.fault_delay_ms)
    return faults


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM (make killed, a CI timeout) unwinds like Ctrl-C, so every process is stopped.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stacks.release.rehearsal", description=__doc__)
    parser.add_argument("--fault", action="store_true", help="the candidate fails one request in five")
    parser.add_argument("--fault-ratio", type=float, help="the candidate's FAULT_ERROR_RATIO (0..1)")
    parser.add_argument("--fault-delay-ms", type=int, help="the candidate's FAULT_DELAY_MS")
    parser.add_argument("--dir", type=Path, default=Path(".local/rehearsal"), help="data and logs")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="requests per second of load")
    args = parser.parse_args(argv)
    if args.fault_ratio is not None and not 0 <= args.fault_ratio <= 1:
        parser.error("--fault-ratio must be from 0 to 1")
    if (args.fault_delay_ms is not None and args.fault_delay_ms < 0) or args.rate <= 0:
        parser.error("--fault-delay-ms must be 0 or more, --rate above 0")
    signal.signal(signal.SIGTERM, _interrupt)
    faults = _faults(args)
    settings = profile()
    print(f"==> starting the local system in {args.dir} (logs in {args.dir / 'logs'})", flush=True)
    try:
        with Rehearsal.running(args.dir, rate=args.rate) as rehearsal:
            print(f"==> stable {rehearsal.stable.api} serves 100 % at {args.rate:g} requests/s", flush=True)
            result = rehearsal.release(faults, settings, out=lambda line: print(f"    {line}", flush=True))
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
