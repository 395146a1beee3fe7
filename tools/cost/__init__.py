"""What a stack costs a month, estimated offline from its rendered plan (`python -m tools.cost`)."""

from tools.cost.estimate import ESTIMATORS, estimate, stack_usage
from tools.cost.model import Context, Estimate, secret_refs
from tools.cost.prices import PRICES, SCHEMA, CostError, load_prices
from tools.cost.report import diff_markdown
from tools.cost.scheduling import runs_per_month
from tools.cost.upstash import REDIS_COMMANDS_PER_JOB, WORKER_IDLE_COMMANDS_PER_HOUR
from tools.cost.worker_pool import WORKER_POOL

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
