"""What `make dev` supervises, fixed or on demand, before anything starts."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from app.local.__main__ import (
    FIXED,
    ON_DEMAND,
    ON_DEMAND_DEFAULTS,
    _arguments,
    _banner,
    _port_problem,
    _supervise,
    scaler_settings,
)
from app.local.config import LocalConfig
from app.local.servers import free_port

pytestmark = pytest.mark.unit


def config(tmp_path: Path, **ports: int) -> LocalConfig:
    values = {
        "api_port": free_port(),
        "worker_port": free_port(),
        "pg_port": free_port(),
        "redis_port": free_port(),
        "scaler_port": free_port(),
        **ports,
    }
    return LocalConfig(root=tmp_path / ".local", **values)


def test_the_scale_is_fixed_unless_asked():
    assert _arguments([]).scale == FIXED
    assert _arguments(["--scale", "on-demand"]).scale == ON_DEMAND


def test_an_unknown_scale_is_refused_by_name():
    result = subprocess.run(
        [sys.executable, "-m", "app.local", "--scale", "sometimes"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid choice: 'sometimes'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_scalers_defaults_and_the_environment_over_them():
    assert scaler_settings({}) == {
        "SCALER_INTERVAL_SECONDS": "2",
        "SCALER_IDLE_SECONDS": "60",
        "SCALER_START_DELAY_SECONDS": "5",
    }
    assert scaler_settings({"SCALER_START_DELAY_SECONDS": "0"})["SCALER_START_DELAY_SECONDS"] == "0"
    assert set(ON_DEMAND_DEFAULTS) == set(scaler_settings({}))


def test_on_demand_a_scaler_replaces_the_worker_and_the_api_wakes_it(tmp_path: Path):
    local = config(tmp_path)
    manager = _supervise(local, {"PATH": "/usr/bin", "SCALER_IDLE_SECONDS": "7"}, ON_DEMAND)
    processes = {name: p["obj"] for name, p in manager._processes.items()}
    assert set(processes) == {"postgres", "redis", "api", "scaler"}
    assert processes["api"].env["WORKER_WAKE_URL"] == f"http://127.0.0.1:{local.scaler_port}/wake"
    scaler = processes["scaler"]
    assert scaler.cmd.endswith("-m app.local.bootstrap --scaler")
    assert scaler.env["SCALER_POOL"] == "local"
    assert scaler.env["PORT"] == str(local.scaler_port)
    assert (scaler.env["SCALER_IDLE_SECONDS"], scaler.env["SCALER_START_DELAY_SECONDS"]) == ("7", "5")


def test_fixed_runs_the_worker_and_wakes_nothing(tmp_path: Path):
    manager = _supervise(config(tmp_path), {"PATH": "/usr/bin"}, FIXED)
    processes = {name: p["obj"] for name, p in manager._processes.items()}
    assert set(processes) == {"postgres", "redis", "api", "worker"}
    assert "WORKER_WAKE_URL" not in processes["api"].env


def test_on_demand_the_scaler_port_is_checked_and_the_worker_port_is_not(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        problem = _port_problem(config(tmp_path, scaler_port=port), ON_DEMAND)
        assert problem is not None and "(scaler)" in problem and "LIFTOFF_SCALER_PORT" in problem
        assert _port_problem(config(tmp_path, worker_port=port), ON_DEMAND) is None
        assert _port_problem(config(tmp_path, scaler_port=port), FIXED) is None


def test_the_banner_states_the_start_delay(tmp_path: Path):
    local = config(tmp_path)
    banner = _banner(local, "token", ON_DEMAND, scaler_settings({"SCALER_START_DELAY_SECONDS": "2.5"}))
    assert "start delay 2.5 s (SCALER_START_DELAY_SECONDS)" in banner
    assert "down to zero after 60 s idle (SCALER_IDLE_SECONDS)" in banner
    assert f"http://127.0.0.1:{local.scaler_port}/health" in banner
    assert "Worker: " not in banner
    assert f"Worker: http://127.0.0.1:{local.worker_port}/metrics" in _banner(local, "token")
