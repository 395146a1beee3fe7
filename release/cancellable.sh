#!/usr/bin/env bash
# Run a command so that cancelling the workflow step stops it the way Ctrl-C at a terminal does.
#
#   release/cancellable.sh .venv/bin/python -m release release --stack prod
#
# or, in a step's own shell, which GitHub signals:
#
#   . release/cancellable.sh
#   cancellable .venv/bin/python -m release release --stack prod || status=$?
#   if [ "$CANCELLED" = "true" ]; then ...; fi
#
# GitHub cancels a step by sending SIGINT, then SIGTERM 7.5 s later, to the step's shell alone,
# and kills the process tree 2.5 s after that
# (https://docs.github.com/en/actions/reference/workflow-cancellation-reference). Bash runs a trap
# only once the foreground command has ended, so a command the step's script runs directly never
# hears of it, and neither does the `pulumi` CLI under the release controller: it is killed
# mid-update. So the step's shell must run this function itself (sourced, not as a child). The
# command leads a process group of its own, in the background, while the shell waits in the
# `wait` builtin, which a trapped signal interrupts at once; each signal then reaches that whole
# group as SIGINT, as a terminal sends it: the first asks `pulumi up` to finish the steps under
# way and start no more, the second stops it, closing its plugins (a migrations execution it was
# waiting for is then cancelled, components/jobrun.py). Returns the command's status; CANCELLED
# says whether a signal arrived.

cancellable() {
  CANCELLED=false
  local group status=0
  set -m # job control: the command below gets a process group of its own
  "$@" &
  group=$!
  set +m
  # shellcheck disable=SC2064 # the group is fixed now; the trap must not depend on a later value
  trap "CANCELLED=true; kill -INT -- -$group 2>/dev/null" INT TERM
  wait "$group" || status=$?
  # A trapped signal ends `wait` early: wait again until the command itself has exited.
  while kill -0 "$group" 2>/dev/null; do
    status=0
    wait "$group" || status=$?
  done
  return "$status"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -uo pipefail
  cancellable "$@"
  exit $?
fi
