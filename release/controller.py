"""The canary controller: ship at 0 %, smoke-test, step the traffic behind metric gates, roll back.

Every decision lives here; the ports (release/ports.py) only read and write the world.
The same controller drives Google Cloud (release/cloud.py) and the local rehearsal
(release/rehearsal/). Its rules, in the words an on-call engineer would use:

- What serves is read live before anything moves; "stable" is what serves, never "the latest
  created". A revision recorded as failed or rolled back is never given traffic again
  (ReleasePlan.check refuses it), unless a person retries it by name.
- A breach, an error while the candidate has traffic, or a denied approval sends everything
  back to stable at once, with a traffic-only update, and the release exits 3.
- A release that stopped half-way (a crash, a pause for approval) resumes from the live state.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from release.compat.report import CompatReport
from release.gates import JobWindow, State, Verdict, Window, combine, evaluate, evaluate_jobs
from release.ports import (
    Approver,
    Clock,
    Deployer,
    DeployError,
    JobMetrics,
    Live,
    LiveReader,
    Metrics,
    NoSynthetic,
    SchemaGate,
    Smoke,
    Synthetic,
)
from stacks import release_plan as plan
from stacks.ledger import Entry, Ledger, Outcome, Release
from stacks.settings.release import ReleaseSettings

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_ROLLED_BACK = 3
EXIT_AWAITING_APPROVAL = 4


@dataclass
class Report:
    """How a release or rollback ended, what was measured, and how long the rollback took."""

    exit_code: int
    outcome: str
    breached: tuple[str, ...] = ()
    lines: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    release: Release | None = None

    def summary(self) -> str:
        """One line: the outcome, the breached gates, and the timings."""
        head = f"{self.outcome} (exit {self.exit_code})"
        if self.breached:
            head += f"; breached: {', '.join(self.breached)}"
        for name, seconds in self.timings.items():
            head += f"; {name.replace('_', ' ')}: {seconds:.2f}"
        return head

    def text(self) -> str:
        """The summary and every line said on the way."""
        return "\n".join([self.summary(), *(f"  {line}" for line in self.lines)])


class Refused(Exception):
    """The release cannot start as asked; nothing was changed."""


class Stopped(Exception):
    """The release ends early with this report (the traffic is already where it must be)."""

    def __init__(self, report: Report) -> None:
        super().__init__(report.outcome)
        self.report = report


@dataclass
class _Run:
    """One release in progress: what serves, what ships, and the ledger to record."""

    stable: Release | None
    candidate: Release
    ledger: Ledger
    start_percent: int = 0
    # The API's traffic and the ledger as this run last set them; None until it has set any.
    expected: dict[str, int] | None = None
    written: Ledger | None = None
    # Until when (metrics time) the candidate's requests have been judged; the next window
    # starts there, so what was not yet readable when a step passed is judged by the next one.
    judged_to: float | None = None
    # The same for the worker's attempts, which are read with no delay: their windows follow
    # each other without overlap, so no attempt is judged twice.
    jobs_judged_to: float | None = None
    # A person retried revisions the ledger marks bad: this run may give them traffic.
    retried: bool = False
    # Probes sent so far (of the stack's synthetic budget), and what the last verdict waited for.
    probes_sent: int = 0
    short: tuple[str, ...] = ()

    @property
    def allowed(self) -> frozenset[str]:
        return frozenset(self.candidate.revisions) if self.retried else frozenset()

    @property
    def base(self) -> Release:
        """The stable release a canary runs beside (a first deploy has none and runs no canary)."""
        if self.stable is None:
            raise RuntimeError("a canary needs a stable release")
        return self.stable


class Controller:
    """Runs releases and rollbacks through the ports, reporting as it goes."""

    def __init__(
        self,
        *,
        settings: ReleaseSettings,
        live: LiveReader,
        deployer: Deployer,
        metrics: Metrics,
        jobs: JobMetrics,
        smoke: Smoke,
        approver: Approver,
        clock: Clock,
        synthetic: Synthetic | None = None,
        schema: SchemaGate | None = None,
        out: Callable[[str], None] = print,
        source: str = "",
    ) -> None:
        self.settings = settings
        self.live = live
        self.deployer = deployer
        self.metrics = metrics
        self.jobs = jobs
        enabled = synthetic is not None and settings.synthetic.enabled
        self.synthetic: Synthetic = synthetic if enabled and synthetic is not None else NoSynthetic(clock)
        # Probes declared with nothing to send them (no probe tenant's token): said at every release.
        self.probes_missing = settings.synthetic.enabled and synthetic is None
        # The schema gate: None where no rollback target's code can be run (the tests' doubles).
        self.schema = schema
        self.smoke = smoke
        self.approver = approver
        self.clock = clock
        self.out = out
        # The commit the program comes from, recorded with each release it ships.
        self.source = source
        self.lines: list[str] = []

    # -- releases ---------------------------------------------------------------------------

    def release(self, *, retry: bool = False, resume: bool = False) -> Report:
        """Ship what the program declares and take it through the steps, or roll it back.

        `resume` takes an unfinished release (paused for approval, or stopped) on from where its
        traffic stands; without it, an unfinished release is sent back and superseded by what the
        program ships now.
        """
        self.lines = []
        self._run: _Run | None = None
        try:
            return self._release(retry, resume)
        except Stopped as stop:
            return stop.report
        except Refused as refusal:
            return self._report(EXIT_USAGE, "refused", reason=str(refusal))
        except DeployError as error:
            return self._failed(f"pulumi up failed: {error}")
        except Exception as error:  # a live read, a token: whatever it is, users come first
            return self._failed(f"{type(error).__name__}: {error}")

    def _release(self, retry: bool, resume: bool) -> Report:
        if self.probes_missing:
            self._say(
                "synthetic traffic is declared (liftoff:release.synthetic) but cannot be sent: no probe"
                " tenant token (LIFTOFF_PROBE_TOKEN); a quiet step is judged on real traffic only"
            )
        unfinished = self._unfinished(self.live.read())
        if resume:
            if unfinished is None:
                raise Refused("nothing to resume: no release holds traffic on its candidate")
            at, base = unfinished.start_percent, unfinished.base.api
            self._say(f"resuming {unfinished.candidate.api} at {at} % beside {base}")
            run = unfinished
        else:
            if unfinished is not None:
                self._supersede(unfinished)
            run = self._ship(retry)
        self._run = run
        if run.stable is None:
            return self._first_deploy(run)
        self._smoke(run)
        for index, percent in enumerate(self.settings.steps):
            if percent < run.start_percent:
                continue
            self._approve(run, index, percent)
            self._step(run, percent)
        self._tail(run)
        return self._promote(run)

    def _failed(self, reason: str) -> Report:
        """An error: if the candidate may have traffic, everything goes back to stable first."""
        run = self._run
        if run is None or run.stable is None or not self._exposed(run):
            return self._report(EXIT_ERROR, "error", reason=reason)
        try:
            self._roll_back(run, reason, ("error",), code=EXIT_ERROR)
        except Stopped as stop:
            return stop.report
        raise AssertionError("_roll_back always stops the release")

    def _exposed(self, run: _Run) -> bool:
        """Whether the candidate may serve: read live (a failed update may have half-applied),
        else as this run last set it."""
        stable = run.base
        try:
            live = self.live.read()
        except Exception:  # the read that failed may be what brought us here
            return bool((run.expected or {}).get(run.candidate.api))
        api = run.candidate.api != stable.api and run.candidate.api in live.serving_api
        worker = run.candidate.worker != stable.worker and run.candidate.worker in live.serving_worker
        return api or worker

    def _unfinished(self, live: Live) -> _Run | None:
        """The release a previous run left with traffic on its candidate, if any."""
        entry = live.ledger.in_progress()
        if entry is None:
            return None
        candidate = entry.release
        others = [r for r in live.serving_api if r != candidate.api]
        if len(others) > 1:
            raise Refused(
                f"traffic is split over {sorted(live.api)}, which no release explains; make rollback"
                " sends it all to the last good release"
            )
        stable: Release | None
        if others:
            stable = self._release_of(others[0], live, exclude=candidate.worker)
        else:
            stable = live.ledger.last_good(excluding=[candidate])
        if stable is None:
            return None
        # What the candidate changed carries its share: an API-only or worker-only release shares
        # the other revision with stable. Both are read, as someone may have moved one by hand.
        percent = max(
            live.api.get(candidate.api, 0) if candidate.api != stable.api else 0,
            live.worker.get(candidate.worker, 0) if candidate.worker != stable.worker else 0,
        )
        if percent == 0:
            return None
        return _Run(
            stable,
            candidate,
            live.ledger,
            start_percent=percent,
            expected=dict(live.api),
            written=live.ledger,
            retried=live.ledger.is_bad(candidate),
        )

    def _supersede(self, run: _Run) -> None:
        """An unfinished release goes back to stable before a new one ships."""
        self._say(f"{run.candidate.api} was left at {run.start_percent} %: sending it back to {run.base.api}")
        ledger = run.ledger.record(run.candidate, Outcome.SUPERSEDED, self._stamp(), "unfinished")
        self.deployer.shift(plan.settle(run.base, ledger))

    def _ship(self, retry: bool) -> _Run:
        live = self.live.read()
        stable = self._stable(live)
        self._say(f"stable: {stable.api} / {stable.worker}" if stable else "first deploy: nothing serves yet")
        ledger, allowed_contract = self._schema(live.ledger, stable)
        candidate = self.deployer.ship(plan.ship(stable, ledger, allowed_contract))
        self._say(f"shipped {candidate.api} / {candidate.worker} at 0 % (tag {plan.CANDIDATE_TAG})")
        if stable is not None and candidate == stable:
            raise Stopped(self._report(EXIT_OK, "unchanged", reason="the program ships what already serves"))
        retried = live.ledger.is_bad(candidate)
        if retried and not retry:
            earlier = live.ledger.entry_for_api(candidate.api)
            why = f" ({earlier.reason})" if earlier and earlier.reason else ""
            raise Refused(
                f"{candidate.api} is recorded as {earlier.outcome if earlier else 'failed'}{why}; ship a"
                " change, or pass --retry to try the same revisions again"
            )
        written = ledger
        ledger = ledger.record(candidate, Outcome.SHIPPED, self._stamp(), commit=self.source)
        expected = {stable.api: 100} if stable else None
        return _Run(stable, candidate, ledger, expected=expected, written=written, retried=retried)

    # -- the schema under every rollback target -------------------------------------------

    def _schema(self, ledger: Ledger, stable: Release | None) -> tuple[Ledger, tuple[str, ...]]:
        """Before anything migrates: refuse a release whose expand migrations break the code of a
        release a rollback could return to; let its contract migrations run only if the stable
        release (which keeps serving, and is where a rollback returns) works with them, and record
        the older releases that would not as no longer supported.

        Returns the ledger to ship with and the contract migrations the migrations job may run.
        """
        gate = self.schema
        if gate is None or stable is None:
            return ledger, ()
        targets = ledger.rollback_targets()
        for entry in targets:
            if entry.commit:
                self._compatible(entry, gate.check(entry.commit))
            else:
                self._say(f"schema: {entry.release.api} has no recorded commit; its code cannot be checked")
        pending = tuple(gate.pending_contract())
        if not pending:
            return ledger, ()
        held = ", ".join(pending)
        base = next((e for e in targets if e.release == stable and e.commit), None)
        if base is None:
            self._say(f"holding contract migrations {held}: {stable.api} has no recorded commit to check")
            return ledger, ()
        report = gate.check(base.commit, allow_contract=pending)
        if report.error:
            self._say(
                f"holding contract migrations {held}: the gate could not check {stable.api}: {report.error}"
            )
            return ledger, ()
        if not report.compatible:
            self._say(
                f"holding contract migrations {held}: the stable release {stable.api} still needs the"
                f" old schema; they run with a later release\n{report.text()}"
            )
            return ledger, ()
        self._say(
            f"contract migrations {held} run with this release: {stable.api} works without the old schema"
        )
        older = [e for e in targets if e is not base]
        return self._unsupport(gate, ledger, stable, older, pending), pending

    def _unsupport(
        self, gate: SchemaGate, ledger: Ledger, stable: Release, older: list[Entry], pending: tuple[str, ...]
    ) -> Ledger:
        """The ledger with the older rollback targets the contract migrations break recorded as no
        longer supported (a target whose code cannot be checked, having no commit, with them), and
        written at once, traffic only, before the update that runs the migrations: if that update
        fails after its migrations job ran, the record stands."""
        lost = [
            e for e in older if not e.commit or not gate.check(e.commit, allow_contract=pending).compatible
        ]
        if not lost:
            return ledger
        shipped = self.source or "this checkout"
        why = f"contract migrations {', '.join(pending)} ran with the release shipped from {shipped}"
        self._say(f"no longer supported by the schema ({why}): {', '.join(e.release.api for e in lost)}")
        marked = ledger.unsupport(lost, why)
        self.deployer.shift(plan.settle(stable, marked))
        return marked

    def _compatible(self, entry: Entry, report: CompatReport) -> None:
        """Refused, with the gate's report, unless `entry`'s code passed; a gate that could not run
        is an error (exit 1), not a verdict."""
        where = f"{entry.release.api} (commit {entry.commit[:12]})"
        if report.error:
            raise RuntimeError(f"the schema gate could not check {where}: {report.error}")
        if not report.compatible:
            raise Refused(
                f"refusing the release before it migrates anything: its migrations break {where}, which"
                f" a rollback could return to\n{report.text()}\nsplit the change into expand and contract"
                " steps (docs/schema-changes.md)"
            )
        self._say(f"schema: {where} works on the new schema ({report.seconds:.1f} s)")

    def _stable(self, live: Live) -> Release | None:
        """The release serving everything now, read live; None before the first deploy."""
        serving = live.serving_api
        if not serving:
            return None
        if len(serving) > 1:
            raise Refused(
                f"traffic is split over {sorted(serving)} with no release in progress; pin it or run"
                " make rollback first"
            )
        stable = self._release_of(serving[0], live)
        if live.ledger.is_bad(stable):
            if live.ledger.last_good() is None:
                # A first deploy that failed: nothing good to keep, so the next one starts over.
                self._say(f"{stable.api} serves but failed its first deploy: shipping as a first deploy")
                return None
            raise Refused(f"{stable.api} serves but is recorded as failed; run make rollback first")
        return stable

    def _release_of(self, api: str, live: Live, exclude: str | None = None) -> Release:
        """The release an API revision belongs to: the ledger's, matched on a worker that serves.

        `exclude` (the candidate's worker) only narrows the guess when the ledger does not know:
        an API-only release shares its worker revision with the stable one.
        """
        serving = live.serving_worker
        recorded = live.ledger.release_serving(api, serving)
        if recorded is not None:
            return recorded
        workers = [r for r in serving if r != exclude]
        if len(workers) != 1:
            raise Refused(f"cannot tell which worker revision goes with {api}: {sorted(live.worker)}")
        return Release(api=api, worker=workers[0])

    def _first_deploy(self, run: _Run) -> Report:
        """Nothing to compare against or to roll back to: smoke-test, then record it as good."""
        failure = self.smoke.check(run.candidate)
        if failure is not None:
            run.ledger = run.ledger.record(run.candidate, Outcome.FAILED, self._stamp(), f"smoke: {failure}")
            self.deployer.shift(plan.first_deploy(run.ledger, traffic_only=True))
            return self._report(
                EXIT_ROLLED_BACK,
                "failed",
                ("smoke",),
                reason=f"first deploy failed its smoke test: {failure}",
            )
        run.ledger = run.ledger.record(run.candidate, Outcome.PROMOTED, self._stamp(), "first deploy")
        self.deployer.shift(plan.settle(run.candidate, run.ledger, run.allowed))
        return self._report(EXIT_OK, "promoted", release=run.candidate)

    def _smoke(self, run: _Run) -> None:
        if run.start_percent > 0:
            return
        failure = self.smoke.check(run.candidate)
        if failure is None:
            self._say(f"smoke test passed on tag {plan.CANDIDATE_TAG}")
            return
        run.ledger = run.ledger.record(run.candidate, Outcome.FAILED, self._stamp(), f"smoke: {failure}")
        self.deployer.shift(plan.settle(run.base, run.ledger))
        raise Stopped(self._report(EXIT_ROLLED_BACK, "failed", ("smoke",), reason=f"smoke test: {failure}"))

    def _approve(self, run: _Run, index: int, percent: int) -> None:
        if not self.settings.approval or index == 0 or percent == run.start_percent:
            return
        answer = self.approver.approve(percent)
        if answer is True:
            self._say(f"approved: {percent} %")
            return
        if answer is None:
            # Nobody to ask here: stop where we are; a run with --resume takes it on from the live state.
            run.ledger = run.ledger.record(run.candidate, Outcome.CANARY, self._stamp())
            raise Stopped(
                self._report(
                    EXIT_AWAITING_APPROVAL,
                    "awaiting-approval",
                    reason=f"holding before {percent} %; a run with --resume (make release RESUME=1)"
                    " approves and goes on",
                )
            )
        self._roll_back(run, f"approval for {percent} % denied", ("approval",))

    def _step(self, run: _Run, percent: int) -> None:
        self._guard(run)
        run.ledger = run.ledger.record(run.candidate, Outcome.CANARY, self._stamp())
        step = plan.step(run.base, run.candidate, percent, run.ledger, run.allowed)
        self.deployer.shift(step)
        run.expected, run.written = _api_shares(step, run.candidate), step.ledger
        self._say(f"step {percent} %: {run.candidate.api} takes {percent} % of the traffic")
        try:
            verdict = self._soak(run, percent)
        except (DeployError, Stopped):
            raise
        except Exception as error:  # any failure to judge the step is a reason to go back
            self._say(traceback.format_exception_only(error)[-1].strip())
            self._roll_back(run, f"could not judge the step: {error}", ("metrics",), code=EXIT_ERROR)
        self._verdict_lines(percent, verdict)
        if verdict.state is not State.PASS:
            self._roll_back(run, f"gates breached at {percent} %", verdict.breached or ("min-requests",))

    def _guard(self, run: _Run) -> None:
        """Stop if someone else moved the traffic since this run did (a rollback by hand).

        Going on would undo their move and route users back to what they sent away from.
        """
        if run.expected is None:
            return
        live = self.live.read()
        if dict(live.api) != run.expected or live.ledger != run.written:
            raise Stopped(
                self._report(
                    EXIT_ROLLED_BACK,
                    "interrupted",
                    ("traffic-moved",),
                    reason=f"the traffic was moved outside this release (now {dict(live.api)});"
                    " stopping without touching it",
                )
            )

    def _soak(self, run: _Run, percent: int) -> Verdict:
        """Judge the step until it passes after a full soak, breaches, or runs out of time.

        A breach ends the step at once: waiting out the soak would only send more users to it.
        """
        start = self.clock.now()
        since = run.judged_to if run.judged_to is not None else start
        jobs_since = run.jobs_judged_to if run.jobs_judged_to is not None else start
        poll = max(1.0, self.settings.soak_seconds / 5)
        # A step passes only once its whole soak is readable, not just what has arrived so far.
        delay = self.metrics.delay_seconds
        while True:
            self._wait(run, poll)
            self._guard(run)
            now = self.clock.now()
            verdict = self._judge(run, percent, (since, jobs_since), now)
            run.short = verdict.waiting
            elapsed = now - start
            if verdict.state is State.BREACH:
                return verdict
            if elapsed < self.settings.soak_seconds + delay:
                continue
            if verdict.state is State.PASS:
                run.judged_to, run.jobs_judged_to = now - delay, now
                return verdict
            if elapsed >= self.settings.wait_limit_seconds + delay:
                run.judged_to, run.jobs_judged_to = now - delay, now
                return self._inconclusive(verdict)

    def _wait(self, run: _Run, seconds: float) -> None:
        """One poll's wait; while the last verdict was short of its minimum, the probes of the
        stack's synthetic traffic fill it, within the release's budget."""
        left = self.settings.synthetic.budget - run.probes_sent
        if not run.short or left <= 0:
            self.clock.sleep(seconds)
            return
        api, jobs = "api" in run.short, "worker" in run.short
        sent = self.synthetic.send(run.candidate, api=api, jobs=jobs, seconds=seconds, limit=left)
        run.probes_sent += sent
        if sent and run.probes_sent >= self.settings.synthetic.budget:
            self._say(f"synthetic traffic: the budget of {self.settings.synthetic.budget} probes is spent")

    def _judge(self, run: _Run, percent: int, since: tuple[float, float], now: float) -> Verdict:
        """The API's gates if the release changed the API, the worker's if it changed the worker;
        `since` is where the requests' window starts, and where the attempts' window does."""
        requests_since, jobs_since = since
        verdicts = []
        if run.candidate.api != run.base.api:
            candidate = self.metrics.window(run.candidate.api, requests_since, now)
            stable: Window | None = None
            if percent < 100:
                stable = self.metrics.window(run.base.api, requests_since, now)
            verdicts.append(evaluate(candidate, stable, self.settings))
        if run.candidate.worker != run.base.worker:
            jobs = self.jobs.jobs(run.candidate.worker, jobs_since, now)
            stable_jobs: JobWindow | None = None
            if percent < 100:
                stable_jobs = self.jobs.jobs(run.base.worker, jobs_since, now)
            verdicts.append(evaluate_jobs(jobs, stable_jobs, self.settings, share=percent))
        return combine(verdicts)

    def _tail(self, run: _Run) -> None:
        """Judge the last step's final minutes once they are readable, before recording it good."""
        delay = self.metrics.delay_seconds
        if delay <= 0 or run.judged_to is None:
            return
        since = (run.judged_to, run.jobs_judged_to if run.jobs_judged_to is not None else run.judged_to)
        self.clock.sleep(delay)
        self._guard(run)
        verdict = self._judge(run, 100, since, self.clock.now())
        if verdict.state is State.BREACH:
            self._verdict_lines(100, verdict)
            self._roll_back(run, "gates breached in the last minutes at 100 %", verdict.breached)

    def _inconclusive(self, verdict: Verdict) -> Verdict:
        seen = []
        if "api" in verdict.waiting and verdict.candidate is not None:
            seen.append(f"{verdict.candidate.requests} of {self.settings.min_requests} requests")
        if "worker" in verdict.waiting and verdict.jobs is not None:
            seen.append(f"{verdict.jobs.attempts} of {self.settings.min_job_attempts} job attempts")
        short = " and ".join(seen)
        if self.settings.on_inconclusive == "promote":
            self._say(f"only {short} seen; onInconclusive is promote, going on")
            return Verdict(
                State.PASS,
                verdict.gates,
                verdict.candidate,
                verdict.stable,
                verdict.jobs,
                verdict.stable_jobs,
            )
        self._say(f"only {short} seen within maxSoakSeconds")
        return verdict

    def _promote(self, run: _Run) -> Report:
        run.ledger = run.ledger.record(run.candidate, Outcome.PROMOTED, self._stamp())
        try:
            self.deployer.shift(plan.settle(run.candidate, run.ledger, run.allowed))
        except DeployError as error:
            # Every gate passed and all traffic is on the candidate already; only the record
            # failed. Sending users back would punish a good release for a bookkeeping error.
            raise Stopped(
                self._report(
                    EXIT_ERROR,
                    "unrecorded",
                    reason=f"{run.candidate.api} passed every gate and serves 100 %, but recording it"
                    f" failed ({error}); make release RESUME=1 judges the last step again and records it",
                )
            ) from error
        return self._report(EXIT_OK, "promoted", release=run.candidate)

    def _roll_back(
        self, run: _Run, reason: str, breached: tuple[str, ...], code: int = EXIT_ROLLED_BACK
    ) -> None:
        """Everything back on stable now, the candidate recorded as failed; ends the release."""
        started = self.clock.now()
        run.ledger = run.ledger.record(run.candidate, Outcome.FAILED, self._stamp(), reason)
        try:
            self.deployer.shift(plan.settle(run.base, run.ledger))
        except (DeployError, plan.UnsafePlanError) as error:
            raise Stopped(
                self._report(
                    EXIT_ERROR,
                    "rollback-failed",
                    breached,
                    reason=f"ROLLBACK FAILED ({error}); traffic may still reach {run.candidate.api}:"
                    " run make rollback now",
                )
            ) from error
        took = self.clock.now() - started
        self._say(f"rolled back: 100 % on {run.base.api} / {run.base.worker} in {took:.2f} s")
        report = self._report(code, "rolled-back", breached, reason=reason, release=run.candidate)
        report.timings["breach_to_stable_seconds"] = took
        raise Stopped(report)

    # -- rollback by hand ------------------------------------------------------------------

    def rollback(self, *, further: bool = False, unfinished: bool = False) -> Report:
        """All traffic and every worker instance back on the last good release, traffic only.

        `further` rolls back the release that serves even when the newest one was already sent
        back (by a gate, say): without it that second step back is refused, as it is rarely meant.
        `unfinished` sends back only a release left unfinished (holding for approval, stopped
        mid-step, or half rolled back) and leaves settled traffic as it is: what a deploy whose
        promotion was never approved needs, whoever moved the traffic since.
        """
        self.lines = []
        live = self.live.read()
        try:
            found = self._rollback_target(live, further, unfinished)
        except Refused as refusal:
            return self._report(EXIT_USAGE, "refused", reason=str(refusal))
        if found is None:
            return self._report(EXIT_OK, "settled", reason="no release is left unfinished; nothing moved")
        bad, target = found
        unsupported = live.ledger.unsupported(target)
        if unsupported:
            return self._report(
                EXIT_USAGE, "refused", reason=self._older_than_the_schema(live.ledger, target, unsupported)
            )
        started = self.clock.now()
        ledger = live.ledger.record(bad, Outcome.ROLLED_BACK, self._stamp(), "rolled back by hand")
        try:
            self.deployer.shift(plan.settle(target, ledger))
        except (DeployError, plan.UnsafePlanError) as error:
            commit = live.ledger.commit_of(target)
            hint = (
                f"; if this checkout declares resources the stack does not have yet, run the rollback"
                f" from commit {commit}, which shipped {target.api} (the rollback workflow's commit input)"
                if commit
                else ""
            )
            return self._report(EXIT_ERROR, "rollback-failed", reason=f"rollback failed: {error}{hint}")
        took = self.clock.now() - started
        self._say(f"rolled back {bad.api}: 100 % on {target.api} / {target.worker} in {took:.2f} s")
        shipped_from = ledger.commit_of(target)
        if shipped_from:
            self._say(f"{target.api} was shipped from commit {shipped_from}")
        report = self._report(EXIT_OK, "rolled-back", release=target)
        report.timings["rollback_seconds"] = took
        return report

    @staticmethod
    def _older_than_the_schema(ledger: Ledger, target: Release, why: str) -> str:
        """Why a rollback to `target` is refused, and what to do instead."""
        floor = ledger.floor
        oldest = (
            f"the oldest release it supports is {floor.release.api}"
            f"{f' (commit {floor.commit[:12]})' if floor.commit else ''}"
            if floor is not None
            else "no recorded release is supported by it"
        )
        return (
            f"refusing to roll back to {target.api}: the schema no longer supports its code ({why}), so"
            f" sending traffic there would break it; {oldest}. Roll forward instead: ship a fix (make"
            " release), or revert the code that went bad on top of the current schema. A contract"
            " migration is not undone by traffic; restoring the old schema is a new migration"
            " (docs/schema-changes.md)."
        )

    def _rollback_target(
        self, live: Live, further: bool, unfinished_only: bool = False
    ) -> tuple[Release, Release] | None:
        """(the release to send away from, the release to send everything to); None when only an
        unfinished release was asked for and there is none."""
        try:
            unfinished = self._unfinished(live)
        except Refused:
            unfinished = None  # the traffic is split in a way no release explains: repaired below
        if unfinished is not None:
            return unfinished.candidate, unfinished.base
        repair = self._repair(live)
        if repair is not None:
            return repair
        if unfinished_only:
            return None
        serving = live.serving_api
        if len(serving) != 1:
            raise Refused(f"expected one serving revision, found {sorted(live.api) or 'none'}")
        current = self._release_of(serving[0], live)
        newest = live.ledger.newest
        sent_back = (Outcome.FAILED, Outcome.ROLLED_BACK, Outcome.SUPERSEDED)
        if not further and newest is not None and newest.release != current and newest.outcome in sent_back:
            raise Refused(
                f"the newest release, {newest.release.api}, is already {newest.outcome.value}"
                f" ({newest.reason or 'no reason recorded'}) and {current.api} serves; pass --further"
                " to roll that back too"
            )
        target = live.ledger.last_good(excluding=[current])
        if target is None:
            raise Refused(f"{current.api} serves and no earlier good release is recorded to roll back to")
        return current, target

    def _repair(self, live: Live) -> tuple[Release, Release] | None:
        """A rollback that did not fully apply: traffic split, or still on a revision recorded bad.

        The newest release is what was being sent back; everything goes to the last good one.
        """
        split = len(live.serving_api) > 1 or len(live.serving_worker) > 1
        bad = live.ledger.bad_revisions()
        on_bad = any(r in bad for r in (*live.serving_api, *live.serving_worker))
        newest = live.ledger.newest
        if not (split or on_bad) or newest is None or newest.outcome is Outcome.PROMOTED:
            return None
        target = live.ledger.last_good(excluding=[newest.release])
        if target is None:
            raise Refused(f"traffic is split over {sorted(live.api)} and no good release is recorded")
        self._say(f"repairing: the traffic still reaches {newest.release.api}, which was being sent back")
        return newest.release, target

    # -- reporting ---------------------------------------------------------------------------

    def _verdict_lines(self, percent: int, verdict: Verdict) -> None:
        for role, window in (("candidate", verdict.candidate), ("stable", verdict.stable)):
            if window is not None:
                p95 = f"{window.p95_ms:.0f} ms" if window.p95_ms is not None else "n/a"
                self._say(
                    f"step {percent} %: {role} {window.requests} requests, {window.errors} 5xx, p95 {p95}"
                )
        for role, jobs in (("candidate worker", verdict.jobs), ("stable worker", verdict.stable_jobs)):
            if jobs is not None:
                p95 = f"{jobs.p95_seconds:.2f} s" if jobs.p95_seconds is not None else "n/a"
                self._say(
                    f"step {percent} %: {role} {jobs.attempts} attempts, {jobs.failures} failed,"
                    f" {jobs.expired} expired leases, p95 {p95}"
                )
        for gate in verdict.gates:
            self._say(f"step {percent} %: {gate.describe()}")

    def _say(self, line: str) -> None:
        self.lines.append(line)
        self.out(line)

    def _report(
        self,
        code: int,
        outcome: str,
        breached: tuple[str, ...] = (),
        *,
        reason: str = "",
        release: Release | None = None,
    ) -> Report:
        if reason:
            self._say(reason)
        return Report(code, outcome, breached, list(self.lines), {}, release)

    def _stamp(self) -> str:
        return datetime.fromtimestamp(self.clock.now(), UTC).isoformat(timespec="seconds")


def _api_shares(step: plan.ReleasePlan, candidate: Release) -> dict[str, int]:
    """The API traffic a plan leaves, by revision ("latest" is the candidate just shipped)."""
    shares: dict[str, int] = {}
    for target in step.api:
        revision = candidate.api if target.is_latest else target.revision
        shares[revision] = shares.get(revision, 0) + target.percent
    return {revision: percent for revision, percent in shares.items() if percent > 0}
