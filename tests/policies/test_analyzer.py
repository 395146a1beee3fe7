"""The pack under the analyzer's own representation: proxies, doubles, secrets and unknowns.

Under `pulumi preview --policy-pack`, validators read `unknown_checking_proxy` objects: lists are a
`Sequence` proxy (not a list), numbers are doubles, secrets arrive unwrapped and values the engine
cannot know yet raise `UnknownValueError`. These tests hold the rules to that, both through the
proxy alone and through the pack's gRPC server as the CLI drives it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format  # type: ignore[import-untyped]
from pulumi.output import Unknown
from pulumi.runtime.proto import analyzer_pb2 as proto
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Secret,
)
from pulumi_policy.deserialize import SPECIAL_SECRET_SIG, SPECIAL_SIG_KEY, deserialize_properties
from pulumi_policy.proxy import UNKNOWN_OBJECT_VALUE, UNKNOWN_STRING_VALUE, unknown_checking_proxy

from policies.common import JOB, SERVICE, WORKER_POOL
from policies.exposure import worker_never_public
from policies.iam import secret_access_to_workloads
from policies.images import images_by_digest
from policies.labels import app_and_env_labels
from policies.pack import NAME, POLICIES
from policies.production import prod_api_scaling, prod_deletion_protection
from policies.redis import UPSTASH, redis_over_tls
from policies.secrets import no_plain_secrets
from policies.traffic import traffic_adds_up
from tests.policies.conftest import DIGEST, check, resource, service
from tools.policy_check import (
    PACK,
    AnalyzerError,
    PolicyAnalyzer,
    PolicyConfigError,
    _struct,
    marshal,
)

pytestmark = pytest.mark.policy

U = UNKNOWN_STRING_VALUE
# An output the program cannot know at preview, as the SDK holds it before marshalling.
NOT_BUILT: Any = Unknown()  # type: ignore[no-untyped-call]
PINNED = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
TAGGED = service(image="europe-west1-docker.pkg.dev/p/liftoff/app:latest")
PLAIN_SECRET = service(envs=[{"name": "DATABASE_URL", "value": "postgresql://u:hunter2@pooler:6543/db"}])
SHORT_SPLIT = {"traffics": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 90}]}


def delivered(props: Mapping[str, Any]) -> Any:
    """The props a validator receives: marshalled as the engine does, then read back as the
    policy runtime's `Analyze` reads them (pulumi_policy/policy.py)."""
    wire = json_format.MessageToDict(_struct(marshal(props)))
    return unknown_checking_proxy(deserialize_properties(wire))


def direct(policy: ResourceValidationPolicy, resource_type: str, props: Any) -> list[str]:
    options = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
    args = ResourceValidationArgs(resource_type, props, "urn:test", "r", options, None, {})
    found: list[str] = []

    def report(message: str, urn: str | None = None) -> None:
        found.append(message)

    validators = policy.validate if isinstance(policy.validate, list) else [policy.validate]
    for validator in validators:
        assert validator is not None
        validator(args, report)
    return found


def test_the_analyzer_delivers_proxies_and_doubles_not_lists_and_ints():
    props = delivered(SHORT_SPLIT)
    traffics = props["traffics"]
    assert isinstance(traffics, Sequence) and not isinstance(traffics, list | tuple)
    assert isinstance(traffics[0], Mapping) and not isinstance(traffics[0], dict)
    assert traffics[0]["percent"] == 90.0 and isinstance(traffics[0]["percent"], float)


@pytest.mark.parametrize(
    ("policy", "props"),
    [(images_by_digest, TAGGED), (no_plain_secrets, PLAIN_SECRET), (traffic_adds_up, SHORT_SPLIT)],
    ids=["images-by-digest", "no-plain-secrets", "traffic-adds-up"],
)
def test_violations_delivered_as_proxies_are_caught(policy, props):
    # The rules that read lists used to accept only list/tuple and so missed these under the CLI.
    assert direct(policy, SERVICE, delivered(props))
    assert check(policy, SERVICE, props)


def test_compliant_resources_pass_as_proxies_too():
    split = {"traffics": [{"type": PINNED, "revision": "api-1", "percent": 100}]}
    assert direct(traffic_adds_up, SERVICE, delivered(split)) == []
    assert direct(images_by_digest, SERVICE, delivered(service())) == []
    settings = service(envs=[{"name": "LOG_LEVEL", "value": "INFO"}])
    assert direct(no_plain_secrets, SERVICE, delivered(settings)) == []


def test_a_value_the_engine_marks_secret_is_still_a_plain_environment_value():
    props = service(envs=[{"name": "DATABASE_URL", "value": Secret("postgresql://u:hunter2@h:5432/db")}])
    (message,) = check(no_plain_secrets, SERVICE, props)
    assert "DATABASE_URL" in message


def cant_run(analyzer: PolicyAnalyzer, resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """Diagnostics of rules that raised UnknownValueError instead of deciding."""
    analyzer.configure({"prod-deletion-protection": {"environment": "prod"}})
    found = analyzer.analyze(resource(resource_type, props))
    return [v.message for v in found if v.message.startswith("can't run policy")]


READ_BY_RULES = ("template", "traffics", "instanceSplits", "member", "members", "role", "tls", "labels")
EVERYTHING_UNKNOWN = dict.fromkeys((*READ_BY_RULES, "deletionProtection"), U)


@pytest.mark.parametrize(
    "resource_type",
    [
        SERVICE,
        WORKER_POOL,
        JOB,
        UPSTASH,
        "gcp:secretmanager/secretIamMember:SecretIamMember",
        "gcp:projects/iAMMember:IAMMember",
        "gcp:cloudrunv2/workerPoolIamBinding:WorkerPoolIamBinding",
        "gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
        "gcp:secretmanager/secret:Secret",
    ],
)
@pytest.mark.parametrize(
    "props",
    [
        EVERYTHING_UNKNOWN,
        {"template": {"containers": [U], "scaling": U, "template": {"containers": U}}},
        {"template": {"containers": [{"image": U, "envs": [U, {"name": U, "value": U}]}]}},
        {"traffics": [U], "instanceSplits": [{"percent": U, "type": U, "revision": U}]},
        {"members": [U, "serviceAccount:a@p.iam.gserviceaccount.com"], "labels": {"app": U, "env": U}},
    ],
    ids=["everything", "lists", "containers", "splits", "members-and-labels"],
)
def test_unknowns_never_stop_a_rule(policy_analyzer, resource_type, props):
    assert cant_run(policy_analyzer, resource_type, props) == []


def test_an_image_not_built_yet_is_left_to_the_update_and_a_tag_beside_it_is_still_caught():
    assert check(images_by_digest, SERVICE, service(image=U)) == []
    assert check(images_by_digest, SERVICE, service(image=NOT_BUILT)) == []
    two = {"template": {"containers": [{"image": U}, {"image": "app:latest"}]}}
    (message,) = check(images_by_digest, SERVICE, two)
    assert "'app:latest'" in message


def test_a_secret_name_with_a_value_not_known_yet_is_reported_now():
    (message,) = check(no_plain_secrets, SERVICE, service(envs=[{"name": "OPENAI_API_KEY", "value": U}]))
    assert "OPENAI_API_KEY" in message
    # A URL's credentials need its value: checked at the update.
    assert check(no_plain_secrets, SERVICE, service(envs=[{"name": "DATABASE_URL", "value": U}])) == []


def test_splits_not_known_yet_are_left_to_the_update():
    assert check(traffic_adds_up, SERVICE, {"traffics": [{"type": PINNED, "percent": U}]}) == []
    named_later = {"traffics": [{"type": PINNED, "revision": U, "percent": 100}]}
    assert check(traffic_adds_up, SERVICE, named_later) == []
    assert check(traffic_adds_up, SERVICE, {"traffics": UNKNOWN_OBJECT_VALUE}) == []


def test_known_members_are_checked_beside_unknown_ones():
    binding = "gcp:cloudrunv2/workerPoolIamBinding:WorkerPoolIamBinding"
    assert check(worker_never_public, binding, {"members": [U, "allUsers"]})
    member = "gcp:secretmanager/secretIamMember:SecretIamMember"
    assert check(secret_access_to_workloads, member, {"member": U}) == []


def test_production_values_not_known_yet_are_left_to_the_update():
    prod = {"environment": "prod"}
    assert check(prod_deletion_protection, SERVICE, {"deletionProtection": U}, config=prod) == []
    scaling = {"template": {"scaling": {"minInstanceCount": U, "maxInstanceCount": 1}}}
    assert check(prod_api_scaling, SERVICE, scaling, config=prod) == [
        "prod API max instances must be at least 2, got 1.0"
    ]
    assert check(redis_over_tls, UPSTASH, {"tls": U}) == []


def test_labels_not_known_yet_count_as_set():
    secret = "gcp:secretmanager/secret:Secret"
    assert check(app_and_env_labels, secret, {"labels": {"app": "liftoff", "env": U}}) == []
    assert check(app_and_env_labels, secret, {"labels": UNKNOWN_OBJECT_VALUE}) == []


def test_marshalling_follows_the_engine():
    wire = marshal(
        {"a": "x", "n": 3, "b": {"c": [1, NOT_BUILT]}, "s": Secret("v"), "__internal": 1}, frozenset({"a"})
    )
    assert wire == {
        "a": {SPECIAL_SIG_KEY: SPECIAL_SECRET_SIG, "value": "x"},
        "n": 3.0,
        "b": {"c": [1.0, UNKNOWN_STRING_VALUE]},
        "s": {SPECIAL_SIG_KEY: SPECIAL_SECRET_SIG, "value": "v"},
    }
    with pytest.raises(TypeError, match=r"b\.c\[0\]: a bytes cannot be sent"):
        marshal({"b": {"c": [b"raw"]}})


def test_the_server_is_the_pack_assembled_in_main(policy_analyzer):
    info = policy_analyzer.info
    assert info.name == NAME
    levels = {p.name: p.enforcementLevel for p in info.policies}
    assert list(levels) == [p.name for p in POLICIES]
    assert levels.pop("app-and-env-labels") == proto.ADVISORY
    assert set(levels.values()) == {proto.MANDATORY}


def _levels(analyzer: PolicyAnalyzer, config: Mapping[str, Any]) -> list[tuple[str, bool]]:
    analyzer.configure(config)
    found = analyzer.analyze(resource(SERVICE, TAGGED))
    return [(v.policy, v.mandatory) for v in found if v.policy == "images-by-digest"]


def test_enforcement_levels_are_configured_as_the_cli_configures_them(policy_analyzer):
    assert _levels(policy_analyzer, {}) == [("images-by-digest", True)]
    assert _levels(policy_analyzer, {"images-by-digest": "advisory"}) == [("images-by-digest", False)]
    assert _levels(policy_analyzer, {"images-by-digest": {"enforcementLevel": "disabled"}}) == []
    assert _levels(policy_analyzer, {"all": "advisory"}) == [("images-by-digest", False)]


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"prod-api-scaling": {"environment": "production"}}, "prod-api-scaling: 'production' is not one of"),
        ({"api-public-only-when-declared": {"publicApi": "yes"}}, "'yes' is not of type 'boolean'"),
        ({"images-by-digest": "loud"}, "'loud' is not a valid enforcement level"),
        ({"images-by-digest": 3}, "must be a string or object"),
        ({"no-such-policy": {"x": 1}}, "no-such-policy: the pack has no policy of that name"),
    ],
)
def test_config_the_cli_would_refuse_is_refused(policy_analyzer, config, error):
    with pytest.raises(PolicyConfigError, match=error):
        policy_analyzer.configure(config)


def _pack(tmp_path: Path, main: str) -> Path:
    """A pack the CLI would start: the real pack's runtime options, its virtualenv a symlink to
    policies/venv (the CLI's os.Stat follows it too)."""
    (tmp_path / "PulumiPolicy.yaml").write_text((PACK / "PulumiPolicy.yaml").read_text())
    (tmp_path / "venv").symlink_to(PACK / "venv", target_is_directory=True)
    (tmp_path / "__main__.py").write_text(main)
    return tmp_path


def test_a_pack_that_does_not_start_is_a_clear_error(tmp_path):
    with pytest.raises(AnalyzerError, match="is not a policy pack"):
        PolicyAnalyzer(tmp_path).start()
    broken = _pack(tmp_path, "raise RuntimeError('the pack is broken')\n")
    with pytest.raises(AnalyzerError, match="did not start: .*the pack is broken"), PolicyAnalyzer(broken):
        pass


def test_a_rule_that_crashes_fails_the_analysis_as_under_the_cli(tmp_path):
    pack = _pack(
        tmp_path,
        "from pulumi_policy import PolicyPack, ResourceValidationPolicy\n"
        "def crash(args, report):\n"
        "    raise ValueError('bad rule')\n"
        "PolicyPack('crashing', [ResourceValidationPolicy('crash', 'crashes', crash)])\n",
    )
    with PolicyAnalyzer(pack) as analyzer, pytest.raises(AnalyzerError, match="Analyze failed: .*bad rule"):
        analyzer.analyze(resource(SERVICE, {"image": DIGEST}))
