"""The scaler's service over the real database, sizing a worker pool through a double of the Cloud
Run Admin API v2 and of the metadata server, both real HTTP on loopback (tests/http_double.py)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.core.db import create_engine
from app.core.metadata import AccessToken
from app.local.servers import free_port
from app.scaler.demand import PostgresDemand
from app.scaler.policy import ScalePolicy
from app.scaler.pools import COUNT_MASK, RUN_API, CloudRunPool, LocalPool, PoolError
from app.scaler.service import RETRY_AFTER_SECONDS, Scaler, create_scaler_app, pool_of
from app.settings import PoolMode, Settings
from tests.app.scaler.conftest import attempt_ended, emptied, jobs
from tests.conftest import Servers
from tests.http_double import Reply, Request, google_error, serve_json

pytestmark = pytest.mark.integration

POOL = "projects/liftoff-prod/locations/europe-west1/workerPools/liftoff-prod-worker"
POOL_PATH = f"/v2/{POOL}"
METADATA_PATH = "/computeMetadata/v1/instance/service-accounts/default"
TOKEN = "ya29.the-metadata-servers-access-token"
POLICY = ScalePolicy(min_instances=0, max_instances=4, idle_seconds=300, concurrency=4)


@dataclass
class CloudRun:
    """The worker pool as the Admin API keeps it, and what the double was asked.

    It answers as the API does only requests made as the API wants them: a GET or PATCH of the
    pool with the metadata server's token, a PATCH with `updateMask=scaling.manualInstanceCount`
    and a body of that field alone. Anything else is a 4xx, so a test sees it as a failure."""

    instances: int = 0
    splits: list[dict[str, Any]] = field(
        default_factory=lambda: [{"type": "INSTANCE_SPLIT_ALLOCATION_TYPE_LATEST", "percent": 100}]
    )
    fail: int | None = None  # a status the Admin API answers every call with
    refuse_patch: int | None = None  # a status it answers PATCH with only
    token_fails: bool = False
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def api(self) -> str:
        return f"{self.url}/v2"

    @property
    def metadata(self) -> str:
        return f"{self.url}{METADATA_PATH}"

    def calls(self, method: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path == POOL_PATH]

    def token_requests(self) -> list[Request]:
        return [r for r in self.requests if r.path == f"{METADATA_PATH}/token"]

    def handle(self, request: Request) -> Reply:
        if request.path == f"{METADATA_PATH}/token":
            if request.headers.get("metadata-flavor") != "Google":
                return Reply(403, "Missing Metadata-Flavor:Google header.")
            if self.token_fails:
                return Reply(500, "internal error")
            return Reply(200, {"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"})
        if request.path != POOL_PATH:
            return google_error(404, "NOT_FOUND", f"{request.path} not found")
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        if self.fail is not None:
            return google_error(self.fail, "UNAVAILABLE", "The service is currently unavailable.")
        with self.lock:
            if request.method == "GET":
                return Reply(200, self.resource())
            if request.method == "PATCH":
                return self.patch(request)
        return google_error(405, "METHOD_NOT_ALLOWED", request.method)

    def resource(self) -> dict[str, Any]:
        scaling = {"manualInstanceCount": self.instances} if self.instances else {}  # proto3: 0 omitted
        return {
            "name": POOL,
            "scaling": scaling,
            "instanceSplits": self.splits,
            "template": {"containers": [{"image": "europe-west1-docker.pkg.dev/p/r/liftoff@sha256:ab"}]},
        }

    def patch(self, request: Request) -> Reply:
        if self.refuse_patch is not None:
            return google_error(self.refuse_patch, "ABORTED", "a concurrent update is in progress")
        if request.query.get("updateMask") != [COUNT_MASK]:
            return google_error(400, "INVALID_ARGUMENT", f"updateMask: {request.query.get('updateMask')}")
        body = request.body
        if not (
            isinstance(body, dict)
            and set(body) == {"scaling"}
            and isinstance(body["scaling"], dict)
            and set(body["scaling"]) == {"manualInstanceCount"}
            and isinstance(body["scaling"]["manualInstanceCount"], int)
            and body["scaling"]["manualInstanceCount"] >= 0
        ):
            return google_error(400, "INVALID_ARGUMENT", f"body: {body!r}")
        self.instances = body["scaling"]["manualInstanceCount"]
        return Reply(
            200, {"name": "projects/liftoff-prod/locations/europe-west1/operations/op-1", "done": False}
        )


@pytest.fixture
def cloud_run() -> Iterator[CloudRun]:
    double = CloudRun()
    with serve_json(double.handle) as served:
        double.url = served.url
        double.requests = served.requests
        yield double


@pytest.fixture
async def db(servers: Servers) -> AsyncIterator[str]:
    async with emptied(servers.dsn):
        yield servers.dsn


@pytest.fixture
def scaler_settings(servers: Servers) -> Settings:
    return Settings(app_env="test", database_url=servers.dsn, log_format="console", scaler_pool=POOL)


@dataclass
class Service:
    http: httpx.AsyncClient
    pool: CloudRunPool


async def serve(
    settings: Settings, dsn: str, cloud_run: CloudRun, policy: ScalePolicy
) -> AsyncIterator[Service]:
    engine = create_engine(dsn, pool_mode=PoolMode.NULL, connect_timeout=1.0)
    client = httpx.AsyncClient()
    pool = CloudRunPool(POOL, client, AccessToken(client, metadata=cloud_run.metadata), api=cloud_run.api)
    app: FastAPI = create_scaler_app(settings, Scaler(PostgresDemand(engine), pool, policy))
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://scaler") as http:
                yield Service(http, pool)
    finally:
        await pool.aclose()
        await engine.dispose()


@pytest.fixture
async def service(scaler_settings: Settings, db: str, cloud_run: CloudRun) -> AsyncIterator[Service]:
    async for running in serve(scaler_settings, db, cloud_run, POLICY):
        yield running


async def test_a_job_queued_at_zero_instances_sets_one(service: Service, db: str, cloud_run: CloudRun):
    await jobs(db, "queued")
    response = await service.http.post("/wake")
    assert response.status_code == 200, response.text
    assert response.json() == {"before": 0, "instances": 1, "reason": "queue", "queued": 1, "running": 0}
    (patch,) = cloud_run.calls("PATCH")
    assert patch.target == f"{POOL_PATH}?updateMask=scaling.manualInstanceCount"
    assert patch.body == {"scaling": {"manualInstanceCount": 1}}
    assert patch.headers["authorization"] == f"Bearer {TOKEN}"
    assert cloud_run.instances == 1


async def test_the_queue_sets_what_it_needs_up_to_the_ceiling(service: Service, db: str, cloud_run: CloudRun):
    await jobs(db, *["queued"] * 6, *["running"] * 3)
    assert (await service.http.post("/wake")).json()["instances"] == 3
    await jobs(db, *["queued"] * 40)
    body = (await service.http.post("/reconcile")).json()
    assert (body["before"], body["instances"], body["reason"]) == (3, 4, "queue (capped at 4)")
    assert [p.body["scaling"]["manualInstanceCount"] for p in cloud_run.calls("PATCH")] == [3, 4]


async def test_a_split_release_gets_an_instance_for_each_revision(
    scaler_settings: Settings, db: str, cloud_run: CloudRun
):
    cloud_run.splits = [
        {"type": "INSTANCE_SPLIT_ALLOCATION_TYPE_REVISION", "revision": "worker-00007-can", "percent": 10},
        {"type": "INSTANCE_SPLIT_ALLOCATION_TYPE_REVISION", "revision": "worker-00006-sta", "percent": 90},
    ]
    await jobs(db, "queued")
    policy = ScalePolicy(min_instances=0, max_instances=20, idle_seconds=300, concurrency=4)
    async for service in serve(scaler_settings, db, cloud_run, policy):
        assert (await service.http.post("/wake")).json()["instances"] == 10
    assert cloud_run.instances == 10


async def test_nothing_queued_and_idle_past_the_period_goes_to_the_floor(
    service: Service, db: str, cloud_run: CloudRun
):
    cloud_run.instances = 3
    (done,) = await jobs(db, "succeeded")
    await attempt_ended(db, done, POLICY.idle_seconds + 60)
    body = (await service.http.post("/reconcile")).json()
    assert body == {"before": 3, "instances": 0, "reason": "idle", "queued": 0, "running": 0}
    assert [p.body for p in cloud_run.calls("PATCH")] == [{"scaling": {"manualInstanceCount": 0}}]


async def test_a_floor_above_zero_is_kept(scaler_settings: Settings, db: str, cloud_run: CloudRun):
    cloud_run.instances = 3
    policy = ScalePolicy(min_instances=1, max_instances=4, idle_seconds=300, concurrency=4)
    async for service in serve(scaler_settings, db, cloud_run, policy):
        assert (await service.http.post("/reconcile")).json()["instances"] == 1
    assert cloud_run.instances == 1


async def test_within_the_idle_period_the_pool_is_kept(service: Service, db: str, cloud_run: CloudRun):
    cloud_run.instances = 2
    (done,) = await jobs(db, "succeeded")
    await attempt_ended(db, done, 30)
    body = (await service.http.post("/reconcile")).json()
    assert (body["instances"], body["reason"]) == (2, "cooling down")
    assert cloud_run.calls("PATCH") == []


async def test_no_patch_when_the_count_is_already_right(service: Service, db: str, cloud_run: CloudRun):
    cloud_run.instances = 1
    await jobs(db, "queued", "running")
    for path in ("/wake", "/reconcile", "/wake"):
        body = (await service.http.post(path)).json()
        assert (body["before"], body["instances"]) == (1, 1)
    assert cloud_run.calls("PATCH") == []
    assert len(cloud_run.calls("GET")) == 3
    # The access token is the metadata server's, asked for once and kept until it nears its end.
    assert len(cloud_run.token_requests()) == 1


async def test_the_database_down_is_a_503_with_retry_after(scaler_settings: Settings, cloud_run: CloudRun):
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    async for service in serve(scaler_settings, down, cloud_run, POLICY):
        response = await service.http.post("/wake")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
        assert response.json()["error"] == "unavailable"
        assert (await service.http.get("/health")).status_code == 200
    assert cloud_run.calls("PATCH") == []


@pytest.mark.parametrize("status", [500, 503])
async def test_the_admin_api_failing_is_a_503_with_retry_after(
    service: Service, db: str, cloud_run: CloudRun, status: int
):
    await jobs(db, "queued")
    cloud_run.fail = status
    for path in ("/wake", "/reconcile"):
        response = await service.http.post(path)
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
        assert str(status) in response.json()["message"]
    # Back: the next reconcile sets the count.
    cloud_run.fail = None
    assert (await service.http.post("/reconcile")).json()["instances"] == 1
    assert cloud_run.instances == 1


async def test_a_patch_refused_is_a_503(service: Service, db: str, cloud_run: CloudRun):
    """The GET answers, the PATCH does not (a quota, a concurrent update): nothing is half done."""
    await jobs(db, "queued")
    cloud_run.refuse_patch = 409
    response = await service.http.post("/wake")
    assert response.status_code == 503
    assert "409" in response.json()["message"]
    assert len(cloud_run.calls("PATCH")) == 1
    assert cloud_run.instances == 0


async def test_the_metadata_server_failing_is_a_503(service: Service, db: str, cloud_run: CloudRun):
    await jobs(db, "queued")
    cloud_run.token_fails = True
    response = await service.http.post("/wake")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert "token" in response.json()["message"]
    assert cloud_run.calls("GET") == []


async def test_the_admin_api_unreachable_is_a_503(scaler_settings: Settings, db: str):
    await jobs(db, "queued")
    engine = create_engine(db, pool_mode=PoolMode.NULL)
    with serve_json(lambda r: Reply(200, {"access_token": TOKEN, "expires_in": 3599})) as metadata:
        client = httpx.AsyncClient()
        pool = CloudRunPool(
            POOL,
            client,
            AccessToken(client, f"{metadata.url}{METADATA_PATH}"),
            api=f"http://127.0.0.1:{free_port()}/v2",
        )
        with pytest.raises(PoolError, match="GET"):
            await pool.read()
        app = create_scaler_app(scaler_settings, Scaler(PostgresDemand(engine), pool, POLICY))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://scaler") as http:
                response = await http.post("/wake")
        await pool.aclose()
    await engine.dispose()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)


async def test_health(service: Service):
    response = await service.http.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_the_settings_choose_the_pool(scaler_settings: Settings):
    cloud = pool_of(scaler_settings)
    assert isinstance(cloud, CloudRunPool)
    assert cloud.url == f"{RUN_API}/{POOL}"
    await cloud.aclose()
    local = pool_of(
        scaler_settings.model_copy(update={"scaler_pool": "local", "scaler_start_delay_seconds": 2.5})
    )
    assert isinstance(local, LocalPool)
    assert local.start_delay == 2.5
    with pytest.raises(ValueError, match="SCALER_POOL"):
        pool_of(scaler_settings.model_copy(update={"scaler_pool": None}))
