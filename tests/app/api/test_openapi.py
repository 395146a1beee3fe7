"""The OpenAPI contract: declared everywhere, and held under generated traffic."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from app.crud import encode_cursor
from app.main import create_app
from app.settings import Settings
from tests.conftest import Servers, bearer, make_token, truncate

pytestmark = pytest.mark.integration

# Two modes of 300: at least 600 generated cases in all.
EXAMPLES_PER_MODE = 300
FUZZ_SECRET = "fuzz-secret-of-at-least-thirty-two-bytes"


@pytest.fixture(scope="module")
def fuzzed_app(servers: Servers, jwks: Any) -> Iterator[FastAPI]:
    app = create_app(
        Settings(
            app_env="test",
            database_url=servers.dsn,
            redis_url=servers.redis.url(),
            supabase_jwt_secret=FUZZ_SECRET,
            log_level="WARNING",
            log_format="console",
        )
    )
    yield app
    # schemathesis keeps the lifespan running for the process; end it with the module.
    from schemathesis.python.asgi import shutdown_lifespans

    shutdown_lifespans()
    import asyncio

    asyncio.run(truncate(servers.dsn))


@pytest.fixture(scope="module")
def api_schema(fuzzed_app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_schema(api_schema: Any, mode: GenerationMode) -> None:
    """Generated requests, valid and invalid, to every operation: no 5xx, responses as declared."""
    auth = bearer(make_token(key=FUZZ_SECRET))
    ran: list[str] = []

    @given(case=api_schema.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_MODE,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: Any) -> None:
        if mode is GenerationMode.POSITIVE and case.query and "cursor" in case.query:
            # A cursor is opaque: no schema can say which strings the API issued, so a valid
            # case carries a real one (a position derived from the generated string).
            seed = hashlib.sha256(str(case.query["cursor"]).encode()).digest()
            position = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=int.from_bytes(seed[:3]))
            case.query["cursor"] = encode_cursor(position, uuid.UUID(bytes=seed[:16]))
        case.call_and_validate(headers=auth)
        ran.append(f"{case.method} {case.path}")

    run()
    operations = [op.ok() for op in api_schema.get_all_operations()]
    if mode is GenerationMode.NEGATIVE:
        # Only an operation that takes input can be sent invalid input.
        operations = [op for op in operations if len(op.path_parameters) + len(op.query) + len(op.body)]
    expected = {f"{op.method.upper()} {op.path}" for op in operations}
    assert len(ran) >= EXAMPLES_PER_MODE
    assert set(ran) == expected, f"not every operation was exercised: {expected - set(ran)}"


def test_every_operation_declares_its_responses(api_schema: Any) -> None:
    document = api_schema.raw_schema
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            success = [code for code in responses if code.startswith("2")]
            assert success, f"{method} {path} declares no success response"
            for code, response in responses.items():
                if code.startswith(("4", "5")):
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorResponse"), f"{method} {path} {code}"


async def test_docs_are_served(fuzzed_app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=fuzzed_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        assert (await http.get("/docs")).status_code == 200
        assert (await http.get("/openapi.json")).json()["info"]["title"] == "Liftoff API"
