"""`make dev SCALE=on-demand` as a user runs it: no worker until a job arrives, one after the start
delay, none again after the idle period, and nothing left running after a SIGTERM."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import testinfra

from app.local.servers import free_port
from tests.app.local.test_local_system import DevSystem

pytestmark = pytest.mark.testinfra

START_DELAY = 3.0
IDLE = 4.0
INTERVAL = 1.0
ROOT = Path(__file__).resolve().parents[3]


def processes() -> dict[int, tuple[int, str]]:
    """pid: (parent pid, command) of every process on the machine."""
    listing = subprocess.run(
        ["ps", "-A", "-o", "pid=,ppid=,stat=,command="], capture_output=True, text=True, check=True
    ).stdout
    found = {}
    for line in listing.splitlines():
        pid, ppid, stat, command = line.split(None, 3)
        if not stat.startswith("Z"):
            found[int(pid)] = (int(ppid), command)
    return found


def descendants(root: int) -> dict[int, str]:
    """The commands of `root`'s descendants, by pid."""
    table = processes()
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, command) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = command
                frontier.append(pid)
    return found


def app_processes(dev: DevSystem, role: str) -> list[int]:
    """The pids of `python -m app <role>` under this `make dev`."""
    assert dev.process is not None
    return [
        pid for pid, command in descendants(dev.process.pid).items() if command.endswith(f"-m app {role}")
    ]


def wait(predicate: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevSystem]:
    system = DevSystem(
        tmp_path_factory.mktemp("dev-on-demand") / ".local",
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        make_args=("SCALE=on-demand",),
        extra_env={
            "LIFTOFF_SCALER_PORT": str(free_port()),
            "SCALER_START_DELAY_SECONDS": str(START_DELAY),
            "SCALER_IDLE_SECONDS": str(IDLE),
            "SCALER_INTERVAL_SECONDS": str(INTERVAL),
        },
    )
    system.start(ROOT)
    try:
        yield system
    finally:
        if system.process is not None and system.process.poll() is None:
            system.stop()


@pytest.fixture(scope="module")
def host() -> Any:
    return testinfra.get_host("local://")


def scaler_port(dev: DevSystem) -> int:
    return int(dev.extra_env["LIFTOFF_SCALER_PORT"])


def test_a_scaler_runs_in_place_of_the_worker_and_no_worker_runs(dev: DevSystem, host: Any):
    wait(lambda: host.socket(f"tcp://127.0.0.1:{scaler_port(dev)}").is_listening, 30, "the scaler")
    binds = [s for s in host.socket.get_listening_sockets() if s.endswith(f":{scaler_port(dev)}")]
    assert binds == [f"tcp://127.0.0.1:{scaler_port(dev)}"]
    assert len(app_processes(dev, "scaler")) == 1
    assert app_processes(dev, "worker") == []
    assert not host.socket(f"tcp://127.0.0.1:{dev.worker_port}").is_listening
    wait(lambda: "Workers: on demand" in dev.log.read_text(), 10, "the banner")
    log = dev.log.read_text()
    assert f"start delay {START_DELAY:g} s (SCALER_START_DELAY_SECONDS)" in log
    assert f"down to zero after {IDLE:g} s idle" in log


def test_a_job_starts_a_worker_after_the_delay_and_succeeds(dev: DevSystem):
    token = dev.dev_env()["LIFTOFF_DEV_TOKEN"]
    submitted = time.monotonic()
    status, job = dev.request("POST", "/v1/generations", token, {"prompt": "from zero"})
    assert status == 202, job
    # Nothing runs it during the simulated start.
    time.sleep(START_DELAY / 2)
    _, read = dev.request("GET", f"/v1/generations/{job['id']}", token)
    assert read["status"] == "queued", read
    assert app_processes(dev, "worker") == []

    def done() -> bool:
        return bool(dev.request("GET", f"/v1/generations/{job['id']}", token)[1]["status"] == "succeeded")

    wait(done, START_DELAY + 30, "the job to succeed")
    assert time.monotonic() - submitted >= START_DELAY
    assert len(app_processes(dev, "worker")) == 1
    _, read = dev.request("GET", f"/v1/generations/{job['id']}", token)
    assert "from zero" in read["result"]["text"]


def test_the_worker_stops_after_the_idle_period(dev: DevSystem):
    wait(lambda: app_processes(dev, "worker") == [], IDLE + INTERVAL * 3 + 20, "the worker to stop")
    assert "worker_stopped" in dev.log.read_text()
    assert len(app_processes(dev, "scaler")) == 1


def test_sigterm_stops_the_scaler_and_its_workers(dev: DevSystem, host: Any):
    token = dev.dev_env()["LIFTOFF_DEV_TOKEN"]
    status, _ = dev.request("POST", "/v1/generations", token, {"prompt": "keep a worker busy"})
    assert status == 202
    wait(lambda: len(app_processes(dev, "worker")) == 1, START_DELAY + 30, "a worker")
    running = {*app_processes(dev, "worker"), *app_processes(dev, "scaler")}
    assert dev.stop() in (0, -15)
    log = dev.log.read_text()
    for name in ("postgres", "redis", "api", "scaler"):
        assert f"{name} stopped" in log
    # Gone, not orphaned: no process that was the scaler or a worker is still alive anywhere.
    assert running & set(processes()) == set()
    for port in (dev.api_port, scaler_port(dev), dev.pg_port, dev.redis_port):
        assert not host.socket(f"tcp://127.0.0.1:{port}").is_listening
