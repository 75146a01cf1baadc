"""`relaytune up`: one process tree under one data directory, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx

from services.cli.standalone import free_port, wait_ready


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


def test_up_runs_a_submitted_job_and_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "rt"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYTUNE_")}
    env["RELAYTUNE_REAPER_INTERVAL_SECONDS"] = "1"
    up = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "up", "--port", str(port),
         "--data-dir", str(data_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, timeout=180, alive=lambda: up.poll() is None)
        key = (data_dir / "api-key").read_text().strip()
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
            [sys.executable, "-m", "services.cli.main", "--data-dir", str(data_dir), "submit",
             str(EXAMPLE), "--api-url", url, "--set", "total_epochs=2", "--set",
             "warmup_epochs=1", "--wait", "--output", str(adapter)],
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert submit.returncode == 0, submit.stdout + submit.stderr
        table = submit.stdout
        for phase, pool in (("preprocess", "t4"), ("warmup", "a10"), ("final", "a100")):
            assert any(phase in line and pool in line and "succeeded" in line
                       for line in table.splitlines()), table
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
