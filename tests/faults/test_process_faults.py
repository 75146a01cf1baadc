"""Processes that die: a worker SIGKILLed while it loads the model, between steps, or half-way
through a checkpoint upload, and the API killed mid-job. Real PostgreSQL, Redis, S3 and Celery
workers; the job goes on and ends with the adapter of a run that was never interrupted.

Each moment is hit from outside the worker, without hooks in it: the S3 proxy in front of the
workers tells when the inputs are downloaded and holds a checkpoint upload open, and the job
store tells which checkpoints were recorded. The dead run's lease is expired and the reaper run
at once (as it would after RELAYTUNE_LEASE_SECONDS), so no test waits for a lease to run out.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from orchestrator import dispatch
from orchestrator.storage import get_store
from services.cli.standalone import free_port, wait_ready
from tests.factories import new_api_key, zip_folder
from tests.faults.fault_helpers import (
    HP,
    assert_checkpoints_whole,
    assert_same_tensors,
    checkpoint_rows,
    events,
    final_adapter,
    job_status,
    metric_steps,
    phase,
    submit,
)
from tests.faults.flaky_s3 import FlakyS3, Request
from tests.orchestrator.relay_helpers import expire_lease, run_reaper

REPO = Path(__file__).resolve().parents[2]
JOB_TIMEOUT_S = 600.0
WARMUP_STEPS = 4  # fault_helpers.HP on the example


def _wait_until(
    check: Callable[[], Any], what: str, timeout: float = JOB_TIMEOUT_S, logs: Path | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    tails = (
        ""
        if logs is None
        else "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs.glob("*.log")
        )
    )
    raise AssertionError(f"{what}: not within {timeout}s\n{tails}")


class Worker:
    """One Celery worker on every pool's queue, as `relaytune worker` runs one: prefork, one
    child at a time and a fresh child for each phase (the child is where a phase runs)."""

    def __init__(self, env: dict[str, str], log: Path, name: str):
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "worker.celery_app:app",
                    "worker",
                    "--queues",
                    "gpu.t4,gpu.a10,gpu.a100",
                    "--concurrency",
                    "1",
                    "--pool",
                    "prefork",
                    "--max-tasks-per-child",
                    "1",
                    "--hostname",
                    f"{name}@%h",
                    "--loglevel",
                    "INFO",
                ],
                env=env,
                cwd=REPO,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def child(self) -> psutil.Process:
        """The process running the current phase."""
        children = psutil.Process(self.process.pid).children()
        assert len(children) == 1, children
        return children[0]

    def kill_child(self) -> None:
        """SIGKILL the phase's process, as the kernel's OOM killer would; the worker lives on
        and starts a fresh child for its next delivery."""
        child = self.child()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)

    def kill(self) -> None:
        """SIGKILL the whole worker, children included, as a lost machine would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


class Fleet:
    """The module's worker; a killed worker is replaced by a new one."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env, self.logs, self.started = env, logs, 0
        self.worker = self._start()

    def _start(self) -> Worker:
        self.started += 1
        name = f"faults{self.started}"
        return Worker(self.env, self.logs / f"worker-{self.started}.log", name)

    def replace(self) -> None:
        self.worker.kill()
        self.worker = self._start()

    def stop(self) -> None:
        self.worker.stop()


@pytest.fixture(scope="module")
def broker(service_env: dict[str, str]) -> str:
    """A Redis database of this module's own (the workers outlive single tests)."""
    import redis

    database = 1 + (os.getpid() + 7) % 14
    url = service_env["RELAYTUNE_BROKER_URL"].rsplit("/", 1)[0] + f"/{database}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="module")
def s3_proxy(s3_endpoint: str) -> Iterator[FlakyS3]:
    with FlakyS3(s3_endpoint) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def fleet(
    service_env: dict[str, str],
    broker: str,
    s3_proxy: FlakyS3,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    env = {
        **os.environ,
        **service_env,
        "RELAYTUNE_BROKER_URL": broker,
        "RELAYTUNE_S3_ENDPOINT": s3_proxy.url,  # the workers' S3 goes through the proxy
        "RELAYTUNE_LEASE_SECONDS": "10",
        "RELAYTUNE_HEARTBEAT_SECONDS": "2",
        # One thread: the same float reductions in every run, and the shared CPUs spared.
        "RELAYTUNE_WORKER_THREADS": "1",
    }
    dispatch.set_dispatcher(dispatch.CeleryDispatcher(broker))
    workers = Fleet(env, tmp_path_factory.mktemp("fault-workers"))
    yield workers
    workers.stop()
    dispatch.set_dispatcher(None)


def _wait_for_job(job_id: str, fleet: Fleet) -> str:
    return str(
        _wait_until(
            lambda: (
                (status := job_status(job_id)) in ("succeeded", "failed", "cancelled") and status
            ),
            f"job {job_id} to finish",
            logs=fleet.logs,
        )
    )


@pytest.fixture(scope="module")
def reference_adapter(fleet: Fleet, tiny_model_dir: str, example_dir: Path) -> dict[str, Any]:
    """The adapter of the same job run without a fault."""
    job_id = submit(example_dir, tiny_model_dir, tenant="reference")
    assert _wait_for_job(job_id, fleet) == "succeeded"
    return final_adapter(job_id)


def _checkpoint_step(key: str | None) -> int:
    """0 for no checkpoint (the phase starts from its input), else the step it was saved at."""
    return 0 if not key else int(key.rsplit("-", 1)[1])


def _kill_while_loading_the_model(job_id: str, fleet: Fleet, proxy: FlakyS3) -> None:
    """Once the warmup has downloaded its inputs it loads the base model: kill it then."""
    _wait_until(
        lambda: phase(job_id, "preprocess").status == "succeeded", "preprocess", logs=fleet.logs
    )
    artifact = set(get_store().list(f"{phase(job_id, 'preprocess').output_key}/"))

    def downloaded() -> bool:
        return artifact <= {s.request.key for s in proxy.seen(lambda r: r.method == "GET")}

    _wait_until(downloaded, "the warmup's download of the artifact", logs=fleet.logs)
    fleet.worker.kill_child()
    assert not events(job_id, "model_loaded", "warmup")  # killed before the load finished
    assert not metric_steps(job_id, "warmup", 1)


def _kill_between_steps(job_id: str, fleet: Fleet, proxy: FlakyS3) -> None:
    """After a few steps, with their checkpoints recorded: the next step is under way."""
    _wait_until(
        lambda: any(
            e.data["kind"] == "epoch" and e.data["step"] == 2
            for e in events(job_id, "checkpoint_saved", "warmup")
        ),
        "warmup's checkpoint at step 2",
        logs=fleet.logs,
    )
    fleet.worker.kill_child()
    assert phase(job_id, "warmup").resume_key


def _kill_during_a_checkpoint_upload(job_id: str, fleet: Fleet, proxy: FlakyS3) -> None:
    """Step 3's checkpoint is going up: its adapter is in the bucket, its training state is
    on the wire (held by the proxy), its manifest not yet written."""
    step_3 = f"jobs/{job_id}/warmup/a1/step-3"

    def training_state(r: Request) -> bool:
        return r.method == "PUT" and r.key == f"{step_3}/training_state.pt"

    hold = proxy.hold(training_state)
    assert hold.arrived.wait(JOB_TIMEOUT_S), "step 3's checkpoint upload never started"
    fleet.worker.kill_child()
    hold.release()
    uploaded = get_store().list(step_3 + "/")
    assert f"{step_3}/adapter/adapter_model.safetensors" in uploaded
    assert f"{step_3}/manifest.json" not in uploaded
    assert step_3 not in {row.key for row in checkpoint_rows(job_id)}
    assert phase(job_id, "warmup").resume_key == f"jobs/{job_id}/warmup/a1/epoch-2"


KILLS = {
    "while_loading_the_model": _kill_while_loading_the_model,
    "between_steps": _kill_between_steps,
    "during_a_checkpoint_upload": _kill_during_a_checkpoint_upload,
}


@pytest.mark.e2e
@pytest.mark.parametrize("moment", list(KILLS))
def test_a_warmup_killed_by_sigkill_resumes_from_its_last_checkpoint_and_ends_bit_exact(
    moment: str,
    clean_db: None,
    fleet: Fleet,
    s3_proxy: FlakyS3,
    reference_adapter: dict[str, Any],
    tiny_model_dir: str,
    example_dir: Path,
) -> None:
    s3_proxy.reset()
    job_id = submit(example_dir, tiny_model_dir)
    KILLS[moment](job_id, fleet, s3_proxy)
    resume_step = _checkpoint_step(phase(job_id, "warmup").resume_key)
    # The dead run holds the lease until it runs out; the reaper then queues attempt 2.
    expire_lease(job_id, "warmup")
    assert run_reaper() == 1

    assert _wait_for_job(job_id, fleet) == "succeeded"
    warmup = phase(job_id, "warmup")
    assert warmup.attempt == 2
    assert [e.attempt for e in events(job_id, "lease_expired", "warmup")] == [1]
    # Attempt 2 went on from the last checkpoint recorded, not from the start.
    assert metric_steps(job_id, "warmup", 2) == list(range(resume_step + 1, WARMUP_STEPS + 1))
    assert_checkpoints_whole(job_id)
    assert_same_tensors(final_adapter(job_id), reference_adapter)


@pytest.mark.e2e
def test_a_worker_lost_whole_is_replaced_and_its_phase_resumes_on_the_new_worker(
    clean_db: None,
    fleet: Fleet,
    s3_proxy: FlakyS3,
    reference_adapter: dict[str, Any],
    tiny_model_dir: str,
    example_dir: Path,
) -> None:
    """kill -9 of the worker itself, children and all; a new worker process takes over."""
    s3_proxy.reset()
    job_id = submit(example_dir, tiny_model_dir)
    _wait_until(
        lambda: max(metric_steps(job_id, "warmup", 1), default=0) >= 2,
        "warmup's step 2",
        logs=fleet.logs,
    )
    fleet.replace()
    resume_step = _checkpoint_step(phase(job_id, "warmup").resume_key)
    expire_lease(job_id, "warmup")
    assert run_reaper() == 1

    assert _wait_for_job(job_id, fleet) == "succeeded"
    assert phase(job_id, "warmup").attempt == 2
    assert metric_steps(job_id, "warmup", 2) == list(range(resume_step + 1, WARMUP_STEPS + 1))
    started = [e.data["worker_id"] for e in events(job_id, "phase_started", "warmup")]
    assert started[0].split("@")[0] != started[1].split("@")[0]  # two different workers
    assert_same_tensors(final_adapter(job_id), reference_adapter)


class Api:
    """`uvicorn services.api.main:app` in a process of its own, on a fixed port."""

    def __init__(self, port: int, env: dict[str, str], log: Path):
        self.url = f"http://127.0.0.1:{port}"
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "services.api.main:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                env=env,
                cwd=REPO,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_ready(self.url, alive=lambda: self.process.poll() is None)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.mark.e2e
def test_an_api_killed_mid_job_comes_back_on_its_port_and_serves_the_finished_job(
    clean_db: None,
    fleet: Fleet,
    service_env: dict[str, str],
    broker: str,
    reference_adapter: dict[str, Any],
    tiny_model_dir: str,
    example_dir: Path,
) -> None:
    port = free_port()
    env = {**os.environ, **service_env, "RELAYTUNE_BROKER_URL": broker}
    log = fleet.logs / "api.log"
    auth = {"Authorization": f"Bearer {new_api_key()}"}
    api = Api(port, env, log)
    try:
        with httpx.Client(base_url=api.url, headers=auth, timeout=30) as client:
            upload = client.post(
                "/v1/datasets", files={"file": ("ex.zip", zip_folder(example_dir))}
            )
            assert upload.status_code == 201, upload.text
            submitted = client.post(
                "/v1/jobs",
                json={
                    "dataset_id": upload.json()["id"],
                    "base_model": tiny_model_dir,
                    "hyperparameters": HP,
                },
            )
            assert submitted.status_code == 201, submitted.text
            job_id = submitted.json()["id"]

            def warmup_running() -> bool:
                phases = client.get(f"/v1/jobs/{job_id}").json()["phases"]
                return any(p["name"] == "warmup" and p["status"] == "running" for p in phases)

            _wait_until(warmup_running, "warmup to run", logs=fleet.logs)
        api.kill()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{api.url}/healthz", timeout=5)
        api = Api(port, env, log)  # the same port, a new process

        with httpx.Client(base_url=api.url, headers=auth, timeout=30) as client:
            _wait_until(
                lambda: (
                    client.get(f"/v1/jobs/{job_id}").json()["status"] in ("succeeded", "failed")
                ),
                "the job to finish",
                logs=fleet.logs,
            )
            job = client.get(f"/v1/jobs/{job_id}").json()
            assert job["status"] == "succeeded", job
            assert all(p["status"] == "succeeded" and p["attempt"] == 1 for p in job["phases"])
            adapter = client.get(f"/v1/jobs/{job_id}/adapter")
            assert adapter.status_code == 200, adapter.text
    finally:
        api.stop()
    from safetensors.torch import load

    with zipfile.ZipFile(io.BytesIO(adapter.content)) as archive:
        assert_same_tensors(
            dict(load(archive.read("adapter_model.safetensors"))), reference_adapter
        )
