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

from stacks.cost import (
    ESTIMATORS,
    REDIS_COMMANDS_PER_JOB,
    SCHEMA,
    WORKER_IDLE_COMMANDS_PER_HOUR,
    Context,
    CostError,
    Estimate,
    diff_markdown,
    estimate,
    load_prices,
    runs_per_month,
    stack_usage,
)
from stacks.plan import render_plan
from stacks.render import ROOT, Rendering, stack_config
from stacks.settings import PRICES, USAGE_KEYS, ConfigError, UsageSettings, usage_settings
from tests.stacks.conftest import render_stack

pytestmark = pytest.mark.unit

TOOL = ROOT / "stacks" / "cost.py"
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


def test_adding_a_worker_instance_adds_one_instance_month():
    before = priced("prod")
    worker = {**stack_config("prod")["liftoff:worker"], "instances": 3}
    after = priced("prod", {"liftoff:worker": worker})
    a, b = lines(before), lines(after)
    # 1 vCPU and 1 GiB all month at the instance-based rates in stacks/prices.yaml.
    assert b["run/liftoff-prod-worker/instances"] - a["run/liftoff-prod-worker/instances"] == pytest.approx(
        MONTH * (0.000018 + 0.000002)
    )
    # One more idle worker also polls Redis: 15 commands an hour (BENCHMARKS.md), $0.20 per 100K.
    assert b["upstash/liftoff-prod"] - a["upstash/liftoff-prod"] == pytest.approx(730 * 15 / 100_000 * 0.20)
    changed = {k for k in a if a[k] != b[k]}
    assert changed <= {"run/liftoff-prod-worker/instances", "upstash/liftoff-prod", "secrets/accesses"}
    assert after.total - before.total == pytest.approx(sum(b[k] - a[k] for k in changed))


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
    # One scheduler job is within the account's 3 free ones; six versions cover staging's.
    assert credits["free/scheduler.job"] == pytest.approx(-0.10)
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
        [sys.executable, str(TOOL), *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_make_cost_prints_lines_and_a_total(stack):
    result = run("--stack", stack)
    assert result.returncode == 0, result.stderr
    assert f"Monthly estimate for {stack}" in result.stdout
    assert re.search(r"^Total\s+[0-9,]+\.[0-9]{2}$", result.stdout, re.M)
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
    as_markdown = run("--stack", "prod", "--plan", str(plan), "--format", "markdown")
    assert as_markdown.stdout.startswith("### prod: about $")
    assert "| **Total** |" in as_markdown.stdout


def test_plan_diff_shows_the_cost_per_stack():
    result = subprocess.run(
        [sys.executable, str(ROOT / "stacks" / "plan.py"), "diff", "--base", "HEAD"],
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
