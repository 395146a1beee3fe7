"""`make dev` as a user runs it: loopback only, private data, a working API, a clean stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import testinfra

from app.local.servers import free_port

pytestmark = pytest.mark.testinfra

START_TIMEOUT = 90.0


@dataclass
class DevSystem:
    """A `make dev` running in the background with its own ports and data directory."""

    root: Path
    api_port: int
    worker_port: int
    pg_port: int
    redis_port: int
    process: subprocess.Popen[bytes] | None = None
    make_args: tuple[str, ...] = ()  # after `make dev`, e.g. SCALE=on-demand
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def log(self) -> Path:
        return self.root.parent / "make-dev.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE") and k != "MFLAGS"}
        env.update(
            LIFTOFF_LOCAL_DIR=str(self.root),
            LIFTOFF_API_PORT=str(self.api_port),
            LIFTOFF_WORKER_PORT=str(self.worker_port),
            LIFTOFF_PG_PORT=str(self.pg_port),
            LIFTOFF_REDIS_PORT=str(self.redis_port),
            PYTHON=sys.executable,
        )
        env.update(self.extra_env)
        return env

    def start(self, repo: Path) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["make", "--no-print-directory", "dev", *self.make_args],
                cwd=repo,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"make dev exited with {self.process.returncode}:\n{self.log.read_text()}"
                )
            if self.ready():
                return
            time.sleep(0.25)
        raise AssertionError(f"/ready not 200 within {START_TIMEOUT}s:\n{self.log.read_text()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api}/ready", timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> int:
        """SIGTERM to `make` itself, as a user's process manager would send it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise

    def dev_env(self) -> dict[str, str]:
        lines = (self.root / "dev.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))

    def request(
        self, method: str, path: str, token: str, body: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310
            f"{self.api}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevSystem]:
    repo = Path(__file__).resolve().parents[3]
    system = DevSystem(
        tmp_path_factory.mktemp("dev") / ".local", free_port(), free_port(), free_port(), free_port()
    )
    system.start(repo)
    try:
        yield system
    finally:
        if system.process is not None and system.process.poll() is None:
            system.stop()


def wait_listening(host: Any, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not host.socket(f"tcp://127.0.0.1:{port}").is_listening and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.fixture(scope="module")
def host() -> Any:
    return testinfra.get_host("local://")


def test_api_and_servers_listen_on_loopback_only(dev: DevSystem, host: Any):
    wait_listening(host, dev.worker_port)
    listening = host.socket.get_listening_sockets()
    for port in (dev.api_port, dev.worker_port, dev.pg_port, dev.redis_port):
        assert host.socket(f"tcp://127.0.0.1:{port}").is_listening, port
        binds = [s for s in listening if s.endswith(f":{port}")]
        assert binds == [f"tcp://127.0.0.1:{port}"], binds


def test_processes_are_alive(dev: DevSystem, host: Any):
    assert dev.process is not None and dev.process.poll() is None
    commands = " ".join(p.args for p in host.process.filter())
    assert f"-p {dev.pg_port}" in commands
    assert f"--port {dev.redis_port}" in commands
    assert "-m app api" in commands
    assert "-m app worker" in commands


def test_data_directories_are_private(dev: DevSystem, host: Any):
    for name in ("postgres", "redis"):
        data = host.file(str(dev.root / name))
        assert data.is_directory
        assert data.mode == 0o700, name
    assert host.file(str(dev.root / "dev.env")).mode == 0o600
    assert host.file(str(dev.root / "jwt-secret")).mode == 0o600


def test_dev_env_has_the_urls_and_a_token(dev: DevSystem):
    env = dev.dev_env()
    assert env["DATABASE_URL"] == f"postgresql://postgres@127.0.0.1:{dev.pg_port}/postgres"
    assert env["REDIS_URL"] == f"redis://127.0.0.1:{dev.redis_port}/0"
    assert env["LIFTOFF_DEV_TOKEN"].count(".") == 2


def test_banner_shows_the_api_url(dev: DevSystem):
    deadline = time.monotonic() + 10
    while f"API: {dev.api}" not in dev.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"API: {dev.api}" in dev.log.read_text()


def test_a_job_is_submitted_and_read_back_by_its_tenant_only(dev: DevSystem):
    env = dev.dev_env()
    status, job = dev.request("POST", "/v1/generations", env["LIFTOFF_DEV_TOKEN"], {"prompt": "hello"})
    assert status == 202, job
    status, read = dev.request("GET", f"/v1/generations/{job['id']}", env["LIFTOFF_DEV_TOKEN"])
    assert (status, read["id"]) == (200, job["id"])
    status, _ = dev.request("GET", f"/v1/generations/{job['id']}", env["LIFTOFF_DEV_TOKEN_OTHER"])
    assert status == 404


def test_the_worker_completes_a_submitted_job(dev: DevSystem):
    token = dev.dev_env()["LIFTOFF_DEV_TOKEN"]
    _, job = dev.request("POST", "/v1/generations", token, {"prompt": "run me"})
    deadline = time.monotonic() + 30
    while True:
        _, read = dev.request("GET", f"/v1/generations/{job['id']}", token)
        if read["status"] == "succeeded" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert read["status"] == "succeeded", read
    assert "run me" in read["result"]["text"]


def test_one_tenant_sending_two_thousand_jobs_in_twenty_seconds_meets_429s(dev: DevSystem):
    """The defaults of the local system protect AI spend: a burst from one tenant is cut off."""
    token = dev.dev_env()["LIFTOFF_DEV_TOKEN_OTHER"]
    limited: list[tuple[str, dict[str, Any]]] = []
    statuses: list[int] = []

    def submit(i: int) -> None:
        if limited:
            return
        request = urllib.request.Request(  # noqa: S310
            f"{dev.api}/v1/generations",
            data=json.dumps({"prompt": f"burst {i}"}).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                statuses.append(response.status)
        except urllib.error.HTTPError as error:
            statuses.append(error.code)
            if error.code == 429:
                limited.append((error.headers["Retry-After"], json.loads(error.read())))

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(submit, range(2_000)))
    assert limited, f"no 429 among {len(statuses)} submissions"
    assert time.monotonic() - started < 20
    retry_after, body = limited[0]
    assert int(retry_after) >= 1
    assert body["error"]["code"] == "tenant_limit"
    assert set(statuses) <= {202, 429}
    # The per-minute default (300), and at most the submissions in flight beyond it.
    assert statuses.count(202) <= 300 + 8


def test_sigterm_stops_everything_and_data_survives_a_restart(dev: DevSystem, host: Any):
    env = dev.dev_env()
    _, job = dev.request("POST", "/v1/generations", env["LIFTOFF_DEV_TOKEN"], {"prompt": "keep me"})
    # make waits for its children, then dies of the SIGTERM it was sent.
    assert dev.stop() in (0, -signal.SIGTERM)
    log = dev.log.read_text()
    for name in ("postgres", "redis", "api", "worker"):
        assert f"{name} stopped" in log
    commands = " ".join(p.args for p in host.process.filter())
    assert f"-p {dev.pg_port}" not in commands
    assert f"--port {dev.redis_port}" not in commands
    for port in (dev.api_port, dev.worker_port, dev.pg_port, dev.redis_port):
        assert not host.socket(f"tcp://127.0.0.1:{port}").is_listening

    dev.start(Path(__file__).resolve().parents[3])
    token = dev.dev_env()["LIFTOFF_DEV_TOKEN"]
    status, read = dev.request("GET", f"/v1/generations/{job['id']}", token)
    assert (status, read["prompt"]) == (200, "keep me")


def test_port_in_use_is_a_clear_error(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "LIFTOFF_LOCAL_DIR": str(tmp_path / ".local"),
            "LIFTOFF_API_PORT": str(port),
            "LIFTOFF_WORKER_PORT": str(free_port()),
            "LIFTOFF_PG_PORT": str(free_port()),
            "LIFTOFF_REDIS_PORT": str(free_port()),
        }
        result = subprocess.run(
            [sys.executable, "-m", "app.local"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert f"error: port {port} on 127.0.0.1 (API) is already in use" in result.stderr
    assert "LIFTOFF_API_PORT=<port> make dev" in result.stderr
    assert "Traceback" not in result.stderr
