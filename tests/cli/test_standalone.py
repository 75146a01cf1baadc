"""`relaytune up`: one process tree under one data directory, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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


def test_up_serves_the_api_and_ctrl_c_stops_every_process(tmp_path: Path) -> None:
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
        # API, three workers (and their pool children) and the embedded Redis
        assert len(_processes_using(data_dir)) >= 5
    finally:
        up.send_signal(signal.SIGINT)
        output = up.communicate(timeout=90)[0].decode()
    assert up.returncode == 0, output
    deadline = time.monotonic() + 10
    while _processes_using(data_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_using(data_dir) == []
    assert "stopping relaytune" in output
