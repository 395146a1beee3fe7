"""The stack's configuration, read once into one typed object, or every problem named by its key.

Each `liftoff:<section>` object is a pydantic model: camelCase keys, no unknown key, and the
rules of components/rules.py, the same ones the components check their arguments with.
Nothing here registers a resource: an invalid stack fails before anything is created.

One module per concern: `base` (errors, the config source, validation), `names`, one module per
group of sections (`services`, `workloads`, `operations`, `secrets`, `usage`), the release rules
that need several sections (`judgeable`), and `stack`, which reads them all into `StackSettings`.
"""

from stacks.settings.base import NAMESPACE, ConfigError, ConfigSource, Place, PulumiConfig, Section
from stacks.settings.judgeable import release_traffic_problems, seconds_per_month, split_instance_problems
from stacks.settings.names import WorkloadNames
from stacks.settings.operations import AlertSettings, RetentionSettings
from stacks.settings.secrets import Secrets
from stacks.settings.services import RedisSettings, SupabaseSettings
from stacks.settings.stack import SECTIONS, StackKeys, StackSettings, load
from stacks.settings.usage import HOURS_PER_MONTH, USAGE_KEYS, UsageSettings, usage_settings
from stacks.settings.workloads import ApiSettings, AppSettings, WorkerSettings

__all__ = [
    "HOURS_PER_MONTH",
    "NAMESPACE",
    "SECTIONS",
    "USAGE_KEYS",
    "AlertSettings",
    "ApiSettings",
    "AppSettings",
    "ConfigError",
    "ConfigSource",
    "Place",
    "PulumiConfig",
    "RedisSettings",
    "RetentionSettings",
    "Secrets",
    "Section",
    "StackKeys",
    "StackSettings",
    "SupabaseSettings",
    "UsageSettings",
    "WorkerSettings",
    "WorkloadNames",
    "load",
    "release_traffic_problems",
    "seconds_per_month",
    "split_instance_problems",
    "usage_settings",
]
