"""The monthly estimate: every resource type priced or declared free, sourced prices, expected deltas."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacks.settings import USAGE_KEYS, ConfigError, UsageSettings, usage_settings
from tests.stacks.conftest import render_stack
from tools.cost import (
    ESTIMATORS,
    PRICES,
    REDIS_COMMANDS_PER_JOB,
    SCHEMA,
    WORKER_IDLE_COMMANDS_PER_HOUR,
    WORKER_POOL,
    Context,
    CostError,
    Estimate,
    diff_markdown,
    estimate,
    load_prices,
    runs_per_month,
    secret_refs,
    stack_usage,
)
from tools.plan_document import render_plan
from tools.render import ROOT, Rendering, stack_config

pytestmark = pytest.mark.unit

TOOL = ("-m", "tools.cost")
BIN = Path(sys.executable).parent
MONTH = 730 * 3600


def document(rendering: Rendering) -> dict[str, Any]:
    """A rendering in the shape of a plan file (the shape the estimator reads)."""
    resources = [{"type": r.type, "name": r.name, "inputs": r.inputs} for r in rendering.resources]
    return {"stack": rendering.stack, "resources": resources}


def priced(stack: str, overrides: dict[str, Any] | None = None, **options: Any) -> Estimate:
    plan = document(render_stack(stack, overrides))
    return estimate(plan, stack_usage(stack), load_prices(), **options)


def lines(result: Estimate) -> dict[str, float]:
    """Each line's cost (unpriced lines as 0)."""
    return {line.key: line.usd or 0.0 for line in result.lines}


@pytest.fixture(scope="module")
def plans() -> dict[str, dict[str, Any]]:
    """The plan documents `make plan` writes, for both committed stacks."""
    return {stack: render_plan(stack, ROOT) for stack in ("staging", "prod")}


# --- The price file ---------------------------------------------------------------------------


def test_the_price_file_matches_its_schema():
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--schemafile", str(SCHEMA), str(PRICES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_is_a_valid_json_schema():
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--check-metaschema", str(SCHEMA)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("case", "change", "message"),
    [
        (
            "no-source",
            lambda p: p["prices"]["scheduler.job"].pop("source"),
            "'source' is a required property",
        ),
        (
            "not-found-with-a-figure",
            lambda p: p["prices"]["monitoring.alert.condition"].update(usd=1.5),
            "prices/monitoring.alert.condition/usd",
        ),
        (
            "secondary-without-note",
            lambda p: p["prices"]["run.idle.cpu"].pop("note"),
            "'note' is a required property",
        ),
        ("bad-date", lambda p: p["prices"]["scheduler.job"].update(checked="last week"), "checked"),
        ("http-source", lambda p: p["prices"]["scheduler.job"].update(source="http://x.example"), "source"),
    ],
    ids=["no-source", "not-found-with-a-figure", "secondary-without-note", "bad-date", "http-source"],
)
def test_a_broken_price_file_is_rejected_by_name(tmp_path, case, change, message):
    prices = yaml.safe_load(PRICES.read_text())
    change(prices)
    broken = tmp_path / "prices.yaml"
    broken.write_text(yaml.safe_dump(prices))
    with pytest.raises(CostError) as caught:
        load_prices(broken)
    assert message in str(caught.value), str(caught.value)


def test_every_price_names_its_source_date_and_regions():
    book = load_prices()
    for price in book.prices.values():
        assert price.source.startswith("https://"), price.id
        assert price.checked == "2026-11-24", price.id
        assert price.regions, price.id
        assert (price.usd is None) == (price.basis == "not-found"), price.id


def test_the_idle_rate_and_commands_per_job_are_the_measured_ones():
    """The Redis figures the estimate uses are the ones BENCHMARKS.md records."""
    text = (ROOT / "BENCHMARKS.md").read_text()
    idle = re.search(r"^\| Idle cost, Redis commands per worker-hour[^|]*\| \*\*([0-9.,]+)\*\*", text, re.M)
    per_job = re.search(r"^\| Redis commands per job[^|]*\| \*\*([0-9.,]+)\*\*", text, re.M)
    assert idle and per_job
    assert float(idle.group(1)) == WORKER_IDLE_COMMANDS_PER_HOUR
    assert float(per_job.group(1)) == REDIS_COMMANDS_PER_JOB


# --- Coverage ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_every_resource_type_in_the_stack_is_priced_or_declared_free(plans, stack):
    book = load_prices()
    types = {r["type"] for r in plans[stack]["resources"]}
    unpriced = {t for t in types if t not in ESTIMATORS and book.free_reason(t) is None}
    assert unpriced == set()
    result = estimate(plans[stack], stack_usage(stack), book)
    keys = [line.key for line in result.lines]
    assert len(keys) == len(set(keys))
    ctx = Context(plans[stack], stack_usage(stack), book)
    for token in types & set(ESTIMATORS):
        assert ESTIMATORS[token](ctx.of_type(token), ctx), token
    assert result.total > 0


def test_a_resource_type_with_no_price_is_an_error(plans):
    sql = {"type": "gcp:sql/databaseInstance:DatabaseInstance", "name": "db", "inputs": {}}
    plan = {**plans["prod"], "resources": [*plans["prod"]["resources"], sql]}
    with pytest.raises(
        CostError, match=r"no price for resource type\(s\) gcp:sql/databaseInstance:DatabaseInstance"
    ):
        estimate(plan, UsageSettings(), load_prices())


def test_a_region_without_prices_is_an_error_naming_it():
    with pytest.raises(CostError, match=r"run\.\w+\.\w+ has no price for region 'asia-south1'"):
        priced("prod", {"gcp:region": "asia-south1"})


# --- The figures ------------------------------------------------------------------------------


def fixed_pool(stack: str, instances: int) -> dict[str, Any]:
    """The stack's worker at a fixed instance count: no scaler, always on."""
    worker = stack_config(stack)["liftoff:worker"]
    return {
        "liftoff:worker": {
            **{k: v for k, v in worker.items() if k not in ("minInstances", "maxInstances", "idleSeconds")},
            "instances": instances,
        }
    }


def test_adding_a_worker_instance_to_a_fixed_pool_adds_one_instance_month():
    # prod's release steps need 4 instances to split (split_instance_problems): 4 and 5.
    before = priced("prod", fixed_pool("prod", 4))
    after = priced("prod", fixed_pool("prod", 5))
    a, b = lines(before), lines(after)
    # 1 vCPU and 1 GiB all month at the instance-based rates in tools/prices.yaml.
    assert b["run/liftoff-prod-worker/instances"] - a["run/liftoff-prod-worker/instances"] == pytest.approx(
        MONTH * (0.000018 + 0.000002)
    )
    # One more idle worker also polls Redis: 15 commands an hour (BENCHMARKS.md), $0.20 per 100K.
    assert b["upstash/liftoff-prod"] - a["upstash/liftoff-prod"] == pytest.approx(730 * 15 / 100_000 * 0.20)
    changed = {k for k in a if a[k] != b[k]}
    assert changed <= {"run/liftoff-prod-worker/instances", "upstash/liftoff-prod", "secrets/accesses"}
    assert after.total - before.total == pytest.approx(sum(b[k] - a[k] for k in changed))


def test_a_fixed_pool_is_priced_always_on_with_no_scaler():
    result = priced("staging", fixed_pool("staging", 1))
    by_key = lines(result)
    # 1 vCPU and 0.5 GiB all month, busy or idle.
    always_on = MONTH * (0.000018 + 0.5 * 0.000002)
    assert by_key["run/liftoff-staging-worker/instances"] == pytest.approx(always_on)
    assert {line.key: line.usd for line in result.idle}[
        "run/liftoff-staging-worker/instances"
    ] == pytest.approx(always_on)
    assert not [k for k in by_key if k.startswith("run/liftoff-staging-scaler/")]
    assert not [k for k in by_key if re.search(r"worker/(floor|busy|idle-tail|starts)$", k)]
    assert "scheduler/liftoff-staging-scaler-schedule" not in by_key
    # No wake keys: the API of a fixed pool wakes nothing.
    upstash = next(line for line in result.lines if line.key == "upstash/liftoff-staging")
    assert "wake" not in upstash.detail and "10,950 idle worker polls in 730 instance-hours" in upstash.detail


def test_raising_min_instances_adds_one_idle_instance_month():
    before = priced("prod")
    api = {**stack_config("prod")["liftoff:api"], "minInstances": 2}
    after = priced("prod", {"liftoff:api": api})
    a, b = lines(before), lines(after)
    key = "run/liftoff-prod-api/min-instances"
    # prod's API is 1 vCPU and 1 GiB; idle minimum instances bill at the idle rates.
    assert b[key] - a[key] == pytest.approx(MONTH * (0.0000025 + 0.0000025))
    assert {k for k in a if a[k] != b[k]} == {key}
    assert after.total - before.total == pytest.approx(MONTH * 0.000005)
    text = diff_markdown(before, after)
    assert "+13.14" in text and "| Cloud Run | API liftoff-prod-api: 2 minimum instances kept warm |" in text


def test_the_api_profile_prices_request_time_and_requests():
    usage = UsageSettings(requests_per_month=3_000_000, mean_request_ms=100)
    result = estimate(document(render_stack("prod")), usage, load_prices())
    by_key = lines(result)
    busy = 3_000_000 * 0.1  # seconds serving
    assert by_key["run/liftoff-prod-api/request-time"] == pytest.approx(busy * (0.000024 + 0.0000025))
    assert by_key["run/liftoff-prod-api/requests"] == pytest.approx(3 * 0.40)
    assert by_key["run/liftoff-prod-api/min-instances"] == pytest.approx((MONTH - busy) * 0.000005)


def test_a_service_billed_by_instance_is_priced_for_its_whole_life():
    plan = document(render_stack("prod"))
    for resource in plan["resources"]:
        if resource["type"] == "gcp:cloudrunv2/service:Service":
            resource["inputs"]["template"]["containers"][0]["resources"]["cpuIdle"] = False
    result = estimate(plan, UsageSettings(requests_per_month=0), load_prices())
    by_key = lines(result)
    assert "run/liftoff-prod-api/min-instances" not in by_key
    # One minimum instance, 1 vCPU and 1 GiB, all month at the instance-based rates.
    assert by_key["run/liftoff-prod-api/instances"] == pytest.approx(MONTH * (0.000018 + 0.000002))


def test_supabase_pro_is_the_plan_fee_with_micro_covered_by_credits():
    result = priced("prod")
    assert lines(result)["supabase/liftoff-prod"] == pytest.approx(25.0)
    assert lines(priced("staging"))["supabase/liftoff-staging"] == 0


def test_a_declared_compute_size_is_priced():
    plan = document(render_stack("prod"))
    for resource in plan["resources"]:
        if resource["type"] == "pulumi-python:dynamic/supabase:Project":
            resource["inputs"]["instance_size"] = "ci_small"
    result = estimate(plan, stack_usage("prod"), load_prices())
    # Pro's $25, 730 h of Small at $0.0206, less the $10 of compute credits.
    assert lines(result)["supabase/liftoff-prod"] == pytest.approx(25 + 730 * 0.0206 - 10)


def test_free_tiers_are_left_out_unless_asked():
    plain = priced("staging")
    applied = priced("staging", free_tiers=True)
    assert not any(line.service == "Free tiers" for line in plain.lines)
    assert "per billing account" in plain.notes[0] and "not counted" in plain.notes[0]
    credits = {line.key: line.usd for line in applied.lines if line.service == "Free tiers"}
    # The two scheduler jobs (retention, the scaler's) are within the account's 3 free ones; six
    # versions cover staging's.
    assert credits["free/scheduler.job"] == pytest.approx(-0.20)
    assert applied.total < plain.total
    assert all((usd or 0) <= 0 for usd in credits.values())


def test_unpriced_lines_are_shown_and_left_out_of_the_total():
    result = priced("prod")
    unpriced = {line.key for line in result.unpriced}
    assert unpriced == {"monitoring/alerts", "monitoring/uptime", "logging/metrics"}
    assert result.total == pytest.approx(sum(line.usd or 0 for line in result.lines))


@pytest.mark.parametrize(
    ("schedule", "runs"),
    [
        ("17 3 * * *", 365 / 12),
        ("*/15 * * * *", 365 * 96 / 12),
        ("0 9 * * 1-5", 261 * 1 / 12),  # the weekdays of 2025
        ("0 0 1,15 * *", 24 / 12),
        ("5/20 * * * *", 365 * 24 * 3 / 12),  # minutes 5, 25, 45
        (
            "0 0 1 * 1",
            (12 + 52 - 2) / 12,
        ),  # the 1st or a Monday: in 2025, 1 September and 1 December are both
    ],
)
def test_cron_schedules_are_counted(schedule, runs):
    assert runs_per_month(schedule) == pytest.approx(runs)


def test_a_schedule_it_cannot_count_is_an_error():
    with pytest.raises(CostError, match="cannot count the runs of cron schedule '0 0 \\* \\* MON'"):
        runs_per_month("0 0 * * MON")


# --- The worker pool on demand ---------------------------------------------------------------

# A second of staging's worker (1 vCPU, 0.5 GiB) at the worker pool rates, of its scaler (1 vCPU,
# 0.5 GiB) at the request-based rates, and of prod's worker (1 vCPU, 1 GiB).
STAGING_WORKER = 0.000018 + 0.5 * 0.000002
STAGING_SCALER = 0.000024 + 0.5 * 0.0000025
PROD_WORKER = 0.000018 + 0.000002
WORKER_LINES = ("floor", "busy", "idle-tail", "starts")


def usage(stack: str, **changes: int) -> UsageSettings:
    """The stack file's usage with some keys changed (by their names in the stack file)."""
    return usage_settings({**stack_config(stack)["liftoff:usage"], **changes})


def at(stack: str, **changes: int) -> dict[str, float]:
    """Each line's cost for the stack as rendered, at its usage with `changes`."""
    return lines(estimate(document(render_stack(stack)), usage(stack, **changes), load_prices()))


def test_staging_costs_at_most_five_dollars_a_month_and_prod_more():
    staging, prod = priced("staging"), priced("prod")
    assert staging.total <= 5, staging.total
    assert prod.total > staging.total
    assert prod.idle_total > staging.idle_total


def test_an_idle_month_of_staging_runs_no_worker_instance():
    result = priced("staging")
    idle = {line.key: line.usd or 0.0 for line in result.idle}
    worker = [f"run/liftoff-staging-worker/{key}" for key in WORKER_LINES]
    assert all(idle[key] == 0 for key in worker)
    assert sum(lines(result)[key] for key in worker) > 0
    # No worker polls Redis and no job is sent; 10 MB is within the included GB.
    assert idle["upstash/liftoff-staging"] == 0
    # Standing still, the scaler still reconciles each minute and its schedule is billed.
    assert idle["run/liftoff-staging-scaler/request-time"] > 0
    assert idle["scheduler/liftoff-staging-scaler-schedule"] == pytest.approx(0.10)
    assert 0 < result.idle_total < result.total
    # The idle month is the same plan with no requests, jobs, busy periods or releases.
    quiet = at(
        "staging",
        requestsPerMonth=0,
        apiInstanceStartsPerMonth=0,
        jobsPerMonth=0,
        jobBurstsPerMonth=0,
        releasesPerMonth=0,
    )
    assert sum(quiet.values()) == pytest.approx(result.idle_total)


def test_a_floor_is_priced_all_month_and_the_busy_time_above_it():
    by_key = lines(priced("prod"))
    u = stack_usage("prod")
    # prod's floor is 1 instance of 1 vCPU and 1 GiB; its instances run 8 jobs at once.
    assert by_key["run/liftoff-prod-worker/floor"] == pytest.approx(MONTH * PROD_WORKER)
    busy = u.jobs_per_month * u.mean_job_seconds / 8
    assert by_key["run/liftoff-prod-worker/busy"] == pytest.approx(busy * PROD_WORKER)
    # Each busy period: 600 s idle, then half a minute to the next scheduled reconcile.
    tail = u.job_bursts_per_month * (600 + 30)
    assert by_key["run/liftoff-prod-worker/idle-tail"] == pytest.approx(tail * PROD_WORKER)
    assert "run/liftoff-prod-worker/instances" not in by_key


def test_the_scaler_is_request_billed_and_not_priced_as_the_api():
    result = priced("staging")
    by_key = lines(result)
    u = stack_usage("staging")
    reconciles = 365 * 24 * 60 / 12  # "* * * * *"
    wakes = u.jobs_per_month  # at most one a job: fewer than one per WORKER_WAKE_SECONDS (10 s)
    starts = u.releases_per_month + 730 / 24  # one a release, one a day
    serving = (reconciles + wakes) * 0.3 + starts * u.worker_start_seconds
    assert by_key["run/liftoff-staging-scaler/request-time"] == pytest.approx(serving * STAGING_SCALER)
    assert by_key["run/liftoff-staging-scaler/requests"] == pytest.approx((reconciles + wakes) / 1e6 * 0.40)
    assert by_key["run/liftoff-staging-scaler/min-instances"] == 0
    assert "run/liftoff-staging-scaler/instances" not in by_key
    # Its schedule is one scheduler job, priced once.
    keys = [line.key for line in result.lines]
    assert keys.count("scheduler/liftoff-staging-scaler-schedule") == 1
    # The request profile prices the API alone: more requests leave the scaler as it was.
    busier = at("staging", requestsPerMonth=500_000)
    changed = {key for key, usd in busier.items() if usd != by_key[key]}
    assert changed == {"run/liftoff-staging-api/request-time", "run/liftoff-staging-api/requests"}


def test_scaler_requests_are_billed_in_whole_tenths_of_a_second():
    key = "run/liftoff-staging-scaler/request-time"
    assert at("staging", scalerRequestMs=201)[key] == pytest.approx(at("staging", scalerRequestMs=300)[key])
    assert at("staging", scalerRequestMs=301)[key] > at("staging", scalerRequestMs=300)[key]


def test_a_longer_idle_period_lengthens_each_tail():
    before = priced("staging")
    worker = {**stack_config("staging")["liftoff:worker"], "idleSeconds": 400}
    after = priced("staging", {"liftoff:worker": worker})
    a, b = lines(before), lines(after)
    key = "run/liftoff-staging-worker/idle-tail"
    bursts = stack_usage("staging").job_bursts_per_month
    assert b[key] - a[key] == pytest.approx(bursts * 100 * STAGING_WORKER)
    # The instances up longer poll Redis longer: 15 commands an hour, $0.20 per 100K.
    polls = bursts * 100 / 3600 * 15
    assert b["upstash/liftoff-staging"] - a["upstash/liftoff-staging"] == pytest.approx(
        polls / 100_000 * 0.20
    )
    assert {k for k in a if a[k] != b[k]} == {key, "upstash/liftoff-staging"}


def test_longer_jobs_lengthen_the_busy_time():
    a, b = at("staging", meanJobSeconds=30), at("staging", meanJobSeconds=40)
    key = "run/liftoff-staging-worker/busy"
    jobs = stack_usage("staging").jobs_per_month
    # Pulumi.staging.yaml runs 4 jobs an instance.
    assert b[key] - a[key] == pytest.approx(jobs * 10 / 4 * STAGING_WORKER)
    assert {k for k in a if a[k] != b[k]} == {key, "upstash/liftoff-staging"}


def test_each_busy_period_adds_a_start_a_tail_and_the_secrets_it_reads():
    bursts = stack_usage("staging").job_bursts_per_month
    a, b = at("staging", jobBurstsPerMonth=bursts), at("staging", jobBurstsPerMonth=bursts + 100)
    starts, tail = "run/liftoff-staging-worker/starts", "run/liftoff-staging-worker/idle-tail"
    assert b[starts] - a[starts] == pytest.approx(100 * 20 * STAGING_WORKER)
    assert b[tail] - a[tail] == pytest.approx(100 * (300 + 30) * STAGING_WORKER)
    # Each start reads the secrets the worker mounts: $0.03 per 10,000 reads.
    [pool] = [r for r in document(render_stack("staging"))["resources"] if r["type"] == WORKER_POOL]
    reads = 100 * secret_refs(pool["inputs"]["template"])
    assert b["secrets/accesses"] - a["secrets/accesses"] == pytest.approx(reads / 10_000 * 0.03)
    assert {k for k in a if a[k] != b[k]} == {starts, tail, "secrets/accesses", "upstash/liftoff-staging"}


def test_a_scaler_that_nothing_asks_to_reconcile_is_an_error(plans):
    resources = [r for r in plans["staging"]["resources"] if r["name"] != "scaler-schedule"]
    with pytest.raises(
        CostError, match="liftoff-staging-scaler of worker pool liftoff-staging-worker has no"
    ):
        estimate({**plans["staging"], "resources": resources}, stack_usage("staging"), load_prices())


# --- Usage assumptions ------------------------------------------------------------------------

BAD_USAGE = [
    ("negative", {"requestsPerMonth": -1}, "liftoff:usage.requestsPerMonth: must be from 0 to"),
    ("zero-duration", {"meanRequestMs": 0}, "liftoff:usage.meanRequestMs: must be from 1 to"),
    ("typo", {"requestPerMonth": 5}, "liftoff:usage.requestPerMonth: unknown key"),
    ("wrong-type", {"jobsPerMonth": "lots"}, "liftoff:usage.jobsPerMonth: must be int, got 'lots'"),
    ("bool", {"releasesPerMonth": True}, "liftoff:usage.releasesPerMonth: must be int"),
]


@pytest.mark.parametrize(("case", "usage", "message"), BAD_USAGE, ids=[c[0] for c in BAD_USAGE])
def test_bad_usage_names_the_key_and_registers_nothing(registrations, case, usage, message):
    with pytest.raises(ConfigError) as caught:
        render_stack("prod", {"liftoff:usage": usage})
    assert message in str(caught.value), str(caught.value)
    assert registrations == []


def test_usage_defaults_apply_where_the_stack_file_is_silent():
    assert usage_settings(None) == UsageSettings()
    assert usage_settings({"requestsPerMonth": 5}).requests_per_month == 5
    with pytest.raises(ConfigError, match="liftoff:usage: must be an object"):
        usage_settings([1, 2])


def test_both_stack_files_declare_their_usage():
    for stack in ("staging", "prod"):
        assert stack_usage(stack) != UsageSettings(), stack


# --- The command line -------------------------------------------------------------------------


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *TOOL, *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_make_cost_prints_lines_and_a_total(stack):
    result = run("--stack", stack)
    assert result.returncode == 0, result.stderr
    assert f"Monthly estimate for {stack}" in result.stdout
    assert re.search(r"^Total\s+[0-9,]+\.[0-9]{2}$", result.stdout, re.M)
    assert re.search(r"^Idle month\s+no requests, jobs or releases\s+[0-9,]+\.[0-9]{2}$", result.stdout, re.M)
    assert "Worker pool" in result.stdout and "Supabase" in result.stdout and "Upstash" in result.stdout
    assert "per billing account" in result.stdout


def test_json_and_markdown_outputs(plans, tmp_path):
    plan = tmp_path / "prod.json"
    plan.write_text(json.dumps(plans["prod"]))
    as_json = run("--stack", "prod", "--plan", str(plan), "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["currency"] == "USD" and data["total"] == pytest.approx(
        sum(line["usd"] or 0 for line in data["lines"]), abs=0.05
    )
    assert set(data["unpriced"]) == {"monitoring/alerts", "monitoring/uptime", "logging/metrics"}
    assert data["usage"]["requestsPerMonth"] == stack_config("prod")["liftoff:usage"]["requestsPerMonth"]
    assert 0 < data["idleTotal"] < data["total"]
    assert data["idleUsage"] == {
        "requestsPerMonth": 0,
        "apiInstanceStartsPerMonth": 0,
        "jobsPerMonth": 0,
        "jobBurstsPerMonth": 0,
        "releasesPerMonth": 0,
    }
    assert data["idleTotal"] == pytest.approx(sum(line["usd"] or 0 for line in data["idleLines"]), abs=0.05)
    as_markdown = run("--stack", "prod", "--plan", str(plan), "--format", "markdown")
    assert as_markdown.stdout.startswith("### prod: about $")
    assert "| **Total** |" in as_markdown.stdout and "| **Idle month** |" in as_markdown.stdout


def test_plan_diff_shows_the_cost_per_stack():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "plan.py"), "diff", "--base", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Monthly cost") == 2
    assert "per billing account" in result.stdout


def test_the_operations_guide_lists_every_usage_key_with_its_default():
    guide = (ROOT / "docs" / "operations.md").read_text()
    documented = {
        key: int(default.replace(",", ""))
        for key, default in re.findall(r"^\| `(\w+)` \| ([0-9,]+) \|", guide, re.M)
    }
    defaults = UsageSettings()
    assert documented == {key: getattr(defaults, name) for key, (name, _, _) in USAGE_KEYS.items()}
