"""Cancelling a release or a rollback: what the controller does on Ctrl-C or a cancelled workflow."""

from __future__ import annotations

import os
import signal
import sys
import threading


class Cancellation:
    """Whether this run was told to stop: Ctrl-C, or a cancelled workflow step.

    A signal reaches the `pulumi` CLI as well when it is sent to the process group (a terminal,
    release/cancellable.sh), and the CLI acts on it: the first SIGINT lets the steps under
    way finish, a second stops them. So the controller does not die on it: dying would abandon
    the CLI (the Automation API waits 0.25 s for a child after KeyboardInterrupt), and the step
    would end with the update still running, for the runner to kill outright. It waits for the
    update, then starts no other (DeployError); its own waits end early.
    """

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> None:
        """Take SIGINT and SIGTERM as a request to stop (the main thread only, as Python requires)."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        first = not self.event.is_set()
        self.event.set()
        if signum == signal.SIGTERM and os.getpgrp() == os.getpid():
            # Sent to this process alone (`kill`, a timeout): pass it on to the group as Ctrl-C.
            os.killpg(os.getpgrp(), signal.SIGINT)
        if first:
            print(
                "cancelling: the update under way is left to finish (signal again to stop it),"
                " and no other starts",
                file=sys.stderr,
                flush=True,
            )

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def sleep(self, seconds: float) -> None:
        self.event.wait(seconds)


CANCELLATION = Cancellation()
