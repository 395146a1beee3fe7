"""What a stack costs a month, estimated offline from its rendered plan (`python -m stacks.cost`)."""

from stacks.cost.estimate import ESTIMATORS, estimate, stack_usage
from stacks.cost.model import Context, Estimate, secret_refs
from stacks.cost.prices import PRICES, SCHEMA, CostError, load_prices
from stacks.cost.report import diff_markdown
from stacks.cost.scheduling import runs_per_month
from stacks.cost.upstash import REDIS_COMMANDS_PER_JOB, WORKER_IDLE_COMMANDS_PER_HOUR
from stacks.cost.worker_pool import WORKER_POOL

__all__ = [
    "ESTIMATORS",
    "PRICES",
    "REDIS_COMMANDS_PER_JOB",
    "SCHEMA",
    "WORKER_IDLE_COMMANDS_PER_HOUR",
    "WORKER_POOL",
    "Context",
    "CostError",
    "Estimate",
    "diff_markdown",
    "estimate",
    "load_prices",
    "runs_per_month",
    "secret_refs",
    "stack_usage",
]
