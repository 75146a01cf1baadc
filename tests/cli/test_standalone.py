"""`relaytune up`: one process tree under one data directory, supervised, stopped cleanly by
Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from services.cli.standalone import Backoff, ProcessTree, free_port, wait_ready


def _processes_using(data_dir: Path) -> list[int]:
    """Processes whose environment points at this data directory (the tree `up` started)."""
    marker = f"RELAYTUNE_DATA_DIR={data_dir}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "circuit-boards"


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _env(**settings: str) -> dict[str, str]:
    """The test run's environment without its RELAYTUNE_ settings: `up` makes its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYTUNE_")}
    return {**env, **{f"RELAYTUNE_{name.upper()}": value for name, value in settings.items()}}


def _up(data_dir: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli.main",
            "up",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_up_runs_a_submitted_job_and_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "rt"
    port = free_port()
    env = _env(reaper_interval_seconds="1")
    up = _up(data_dir, port, env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, timeout=180, alive=lambda: up.poll() is None)
        key = (data_dir / "api-key").read_text().strip()
        assert (data_dir / "api-url").read_text().strip() == url  # for the client commands
        pools = httpx.get(f"{url}/v1/pools", headers={"Authorization": f"Bearer {key}"})
        assert [p["name"] for p in pools.json()] == ["t4", "a10", "a100"]
        assert (data_dir / "relaytune.db").is_file()
        assert (data_dir / "models" / "tiny-qwen3-vl" / "config.json").is_file()
        # the API and three workers (redis-server rewrites its own environ: found by its port)
        assert len(_processes_using(data_dir)) >= 4
        broker = _environ(_processes_using(data_dir)[0])["RELAYTUNE_BROKER_URL"]
        broker_port = int(broker.rsplit(":", 1)[1].split("/")[0])
        assert port_open(broker_port)
        adapter = tmp_path / "adapter.zip"
        submit = subprocess.run(
            [
                sys.executable,
                "-m",
                "services.cli.main",
                "--data-dir",
                str(data_dir),
                "submit",
                str(EXAMPLE),
                "--api-url",
                url,
                "--set",
                "total_epochs=2",
                "--set",
                "warmup_epochs=1",
                "--wait",
                "--output",
                str(adapter),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert submit.returncode == 0, submit.stdout + submit.stderr
        table = submit.stdout
        for phase, pool in (("preprocess", "t4"), ("warmup", "a10"), ("final", "a100")):
            assert any(
                phase in line and pool in line and "succeeded" in line
                for line in table.splitlines()
            ), table
        assert "total cost" in table
        with zipfile.ZipFile(adapter) as archive:
            assert "adapter_config.json" in archive.namelist()
        for pool in ("t4", "a10", "a100"):
            # each worker imported the libraries before forking, and its phase's child took
            # a share of the CPUs that the three workers divide
            log = (data_dir / "logs" / f"worker-{pool}.log").read_text()
            assert "preloaded" in log and "shared by 3 workers" in log, log[-3000:]
    finally:
        up.send_signal(signal.SIGINT)
        output = up.communicate(timeout=90)[0].decode()
    assert up.returncode == 0, output
    deadline = time.monotonic() + 10
    while _processes_using(data_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_using(data_dir) == []
    assert not port_open(broker_port)
    assert not port_open(port)
    assert "stopping relaytune" in output


def _logged(log: Path, pattern: str, timeout: float = 120.0) -> re.Match[str]:
    """The first match of `pattern` in `up`'s log, once it is written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text()) if log.exists() else None
        if found:
            return found
        time.sleep(0.2)
    written = log.read_text()[-3000:] if log.exists() else "(no log)"
    raise AssertionError(f"{pattern!r} not in {log}: {written}")


def _children_named(parent: int, name: bytes) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == parent and name in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_a_killed_worker_is_restarted_and_a_dead_broker_stops_everything(tmp_path: Path) -> None:
    data_dir = tmp_path / "rt"
    port = free_port()
    up = _up(data_dir, port, _env(worker_preload="false"))
    log = data_dir / "logs" / "up.log"
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout=180, alive=lambda: up.poll() is None)
        first = int(_logged(log, r"started worker-t4 \(pid (\d+)\)")[1])
        os.kill(first, signal.SIGKILL)
        restarted = int(_logged(log, r"worker-t4 restarted \(pid (\d+)")[1])
        assert restarted != first
        assert b"--pool\0t4" in Path(f"/proc/{restarted}/cmdline").read_bytes()
        assert f"worker-t4 (pid {first}) was killed by SIGKILL; restarting it in" in log.read_text()
        assert up.poll() is None
        # The broker cannot come back without losing the messages it held: `up` stops.
        (broker,) = _children_named(up.pid, b"redis-server")
        os.kill(broker, signal.SIGKILL)
        output = up.communicate(timeout=120)[0].decode()
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            up.communicate(timeout=90)
    assert up.returncode == 1, output
    # the terminal says what the log says
    assert f"worker-t4 (pid {first}) was killed by SIGKILL" in output, output
    assert f"worker-t4 restarted (pid {restarted}" in output, output
    assert "broker (redis)" in output and "cannot be restarted safely" in output, output
    assert "stopping relaytune" in output
    deadline = time.monotonic() + 10
    while _processes_using(data_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_using(data_dir) == []
    assert not port_open(port)


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_a_killed_up_takes_its_children_with_it(tmp_path: Path) -> None:
    """SIGKILL gives `up` no chance to stop its tree: its children must notice on their own,
    or workers keep claiming phases and the port stays taken with nobody supervising them."""
    data_dir = tmp_path / "rt"
    port = free_port()
    up = _up(data_dir, port, _env(worker_preload="false"))
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout=180, alive=lambda: up.poll() is None)
        assert len(_processes_using(data_dir)) >= 5  # the API, three workers, the broker
        up.kill()
        up.communicate(timeout=30)
        deadline = time.monotonic() + 90
        while _processes_using(data_dir) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = _processes_using(data_dir)
    finally:
        for pid in _processes_using(data_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert left == []
    assert not port_open(port)


def test_up_on_a_taken_port_names_it_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as other_server:
        other_server.bind(("127.0.0.1", 0))
        other_server.listen()
        port = other_server.getsockname()[1]
        up = subprocess.run(
            [
                sys.executable,
                "-m",
                "services.cli.main",
                "up",
                "--port",
                str(port),
                "--data-dir",
                str(tmp_path / "rt"),
            ],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert up.returncode != 0
    assert f"port {port}" in up.stderr and "already in use" in up.stderr, up.stderr
    assert "--port" in up.stderr
    assert not (tmp_path / "rt").exists()


def test_restart_delays_double_up_to_a_cap() -> None:
    backoff = Backoff(first=1, cap=8)
    assert [backoff.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]


def _kill_and_wait_for_restart(tree: ProcessTree) -> int:
    (child,) = tree.children
    dead = child.process.pid
    child.process.kill()
    child.process.wait()
    while child.process.pid == dead:
        tree.supervise()
        time.sleep(0.01)
    return child.deaths_in_a_row


@pytest.mark.parametrize(("reset_after", "deaths"), [(3600.0, [1, 2, 3]), (0.0, [1, 1, 1])])
def test_quick_deaths_in_a_row_lengthen_the_delay_and_a_long_run_resets_it(
    tmp_path: Path, reset_after: float, deaths: list[int]
) -> None:
    tree = ProcessTree(backoff=Backoff(first=0.01, cap=0.05, reset_after=reset_after))
    tree.spawn("sleeper", ["sleep", "60"], dict(os.environ), tmp_path / "sleeper.log")
    try:
        assert [_kill_and_wait_for_restart(tree) for _ in deaths] == deaths
        assert tree.children[0].restarts == len(deaths)
        assert tree.alive("sleeper")
    finally:
        tree.stop()


def _start_and_stop(data_dir: Path, port: int) -> None:
    """`up` once, until its API answers; GET /v1/models lists the tiny model then."""
    up = _up(data_dir, port, _env(worker_preload="false"))
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, timeout=180, alive=lambda: up.poll() is None)
        key = (data_dir / "api-key").read_text().strip()
        listed = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert "tiny-qwen3-vl" in [m["id"] for m in listed.json()["data"]], listed.text
    finally:
        up.send_signal(signal.SIGINT)
        output = up.communicate(timeout=90)[0].decode()
    assert up.returncode == 0, output


def test_up_registers_the_tiny_model_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "rt"
    _start_and_stop(data_dir, free_port())
    log = data_dir / "logs" / "up.log"
    registered = r"registered tiny-qwen3-vl \((\d+) of (\d+) files uploaded\)"
    first = re.findall(registered, log.read_text())
    assert len(first) == 1 and first[0][0] == first[0][1] != "0", first
    _start_and_stop(data_dir, free_port())
    again = re.findall(registered, log.read_text())
    assert [uploaded for uploaded, _ in again] == [first[0][0], "0"]
