#!/usr/bin/env bash
# Run a command so that cancelling the workflow step stops it the way Ctrl-C at a terminal does.
#
#   stacks/release/cancellable.sh .venv/bin/python -m stacks.release release --stack prod
#
# GitHub cancels a step by sending SIGINT, then SIGTERM 7.5 s later, to the step's shell alone,
# and kills the process tree 2.5 s after that
# (https://docs.github.com/en/actions/reference/workflow-cancellation-reference): without this,
# the `pulumi` CLI under the release controller never hears of it and is killed mid-update. Here
# the command leads a process group of its own, and each of those signals reaches that whole
# group as SIGINT, as a terminal sends it: the first asks `pulumi up` to finish the steps under
# way and start no more, the second stops it, closing its plugins (a migrations execution it was
# waiting for is then cancelled, components/jobrun.py). Exits with the command's status.
set -uo pipefail

set -m # job control: the command below gets a process group of its own
"$@" &
group=$!
set +m
trap 'kill -INT -- "-$group" 2>/dev/null' INT TERM
status=0
wait "$group" || status=$?
# A trapped signal ends `wait` early: wait again until the command itself has exited.
while kill -0 "$group" 2>/dev/null; do
  status=0
  wait "$group" || status=$?
done
exit "$status"
