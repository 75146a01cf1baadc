"""The dashboard in headless Chromium against a real API on a port: sign in, follow a job that
moves without reloading the page, cancel it and requeue a phase from it, read its evaluation and
download its adapter. Phases are driven as workers drive them (claim, progress, complete)."""

from __future__ import annotations

import io
import json
import math
import os
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from fastapi.testclient import TestClient

from orchestrator import layout, runs
from orchestrator.db import session_scope
from orchestrator.dispatch import RecordingDispatcher
from orchestrator.events import EventType, emit
from orchestrator.storage import get_store
from services.api.main import create_app
from tests.api.event_stream_stand_in import EventStreamStandIn, StreamLog
from tests.api.live_api import live_api
from tests.factories import dataset_zip, new_api_key
from tests.orchestrator import relay_helpers as relay

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
NO_BROWSER = (
    "the dashboard's browser tests need Debian's chromium and chromium-driver "
    f"({CHROMIUM}, {CHROMEDRIVER}): apt-get install -y chromium chromium-driver"
)
# Where to keep the screenshot of the running job's page (by default the test's tmp dir).
SCREENSHOT = os.environ.get("RELAYTUNE_DASHBOARD_SCREENSHOT")
TOTAL_STEPS = 30  # 3 epochs of 10 steps: warmup has steps 1-20, final 21-30
WAIT_S = 30


def test_the_page_and_its_files_are_served_and_the_api_is_unchanged(client: TestClient) -> None:
    page = client.get("/", headers={"Authorization": ""})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'src="dashboard/app.js"' in page.text
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        asset = client.get(f"/dashboard/{name}")
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith(kind)
    for missing in ("nope.js", "app.py", "..%2Fmain.py", "%2E%2E%2Froutes%2Fdashboard.py"):
        response = client.get(f"/dashboard/{missing}")
        assert response.status_code == 404, missing
        assert response.json()["error"]["code"] == "not_found"
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/docs").status_code == 200
    assert client.get("/v1/jobs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and "/dashboard/{name}" not in paths


@pytest.fixture
def api_url(clean_db: None, recorded_dispatch: RecordingDispatcher) -> Iterator[str]:
    with live_api() as url:
        yield f"{url}/"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(NO_BROWSER)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1180",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(tmp_path / "downloads")}
    )
    # The system driver, named: Selenium Manager never looks for (or downloads) another.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


class Page:
    """The dashboard as a user sees it, with waits that fail naming what never showed."""

    def __init__(self, driver: Any, url: str):
        self.driver, self.url = driver, url

    def css(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def texts(self, selector: str) -> list[str]:
        from selenium.common.exceptions import StaleElementReferenceException

        while True:
            try:
                return [e.text for e in self.all(selector)]
            except StaleElementReferenceException:
                continue  # redrawn while read: read the new one

    def wait(self, what: str, check: Callable[[], Any]) -> Any:
        from selenium.common.exceptions import WebDriverException

        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                value = check()
                if value:
                    return value
            except WebDriverException:
                pass  # not on the page yet, or redrawn while read
            if time.monotonic() > deadline:
                notice = self.texts("#notice")
                raise AssertionError(f"never saw {what}; notice: {notice}")
            time.sleep(0.1)

    # The page redraws parts as the job moves: an element found may be replaced before it is
    # read or clicked, so both retry until they act on the element shown.
    def read(self, selector: str, attribute: str | None = None) -> str:
        def value() -> tuple[str]:
            element = self.css(selector)
            return (element.text if attribute is None else element.get_attribute(attribute),)

        return self.wait(f"{selector} readable", value)[0]

    def enabled(self, selector: str) -> bool:
        return bool(
            self.wait(f"{selector} readable", lambda: (self.css(selector).is_enabled(),))[0]
        )

    def click(self, selector: str) -> None:
        self.wait(f"{selector} clicked", lambda: self.css(selector).click() or True)

    def wait_text(self, selector: str, expected: str) -> None:
        self.wait(f"{selector} = {expected!r}", lambda: expected in self.texts(selector))

    def sign_in(self, key: str) -> None:
        self.driver.get(self.url)
        self.wait("the sign-in form", lambda: self.css("#api-key"))
        self.css("#api-key").send_keys(key)
        self.click("#sign-in button[type=submit]")

    def phase(self, name: str, part: str) -> str:
        return self.read(f'.phase[data-phase="{name}"] {part}')


def submit_job(api: httpx.Client) -> str:
    upload = api.post("v1/datasets", files={"file": ("d.zip", dataset_zip())})
    assert upload.status_code == 201, upload.text
    job = api.post(
        "v1/jobs", json={"dataset_id": upload.json()["id"], "hyperparameters": relay.SHORT_RUN}
    )
    assert job.status_code == 201, job.text
    return str(job.json()["id"])


class JobPage(NamedTuple):
    api: httpx.Client
    page: Page
    job_id: str


def open_new_job(url: str, browser: Any) -> JobPage:
    """A new tenant's new job, opened on its page by a browser signed in with the tenant's key."""
    key = new_api_key()
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"})
    job_id = submit_job(api)
    page = Page(browser, url)
    page.sign_in(key)
    page.wait("the job in the list", lambda: page.css(f'.job-row[data-job-id="{job_id}"]'))
    browser.get(f"{url}#/jobs/{job_id}")
    return JobPage(api, page, job_id)


def report(claim: runs.Claim, step: int) -> bool:
    """A training step as the worker reports it; True when the job is to cancel."""
    loss = 2.4 * math.exp(-step / 9) + 0.15 * math.sin(step)
    lr = 2e-4 * min(1.0, step / 3) * (0.5 + 0.5 * math.cos(math.pi * step / TOTAL_STEPS))
    with session_scope() as session:
        return runs.report_progress(
            session,
            claim,
            step=step,
            total_steps=TOTAL_STEPS,
            epoch=(step - 1) // 10,
            metrics={"loss": loss, "lr": lr},
            lease_seconds=relay.LEASE,
        )


def test_a_job_moves_on_the_page_without_reloading_and_is_cancelled_from_it(
    api_url: str, browser: Any, tmp_path: Path
) -> None:
    key = new_api_key()
    api = httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {key}"})
    job_id = submit_job(api)
    page = Page(browser, api_url)

    page.sign_in(key)
    row = f'.job-row[data-job-id="{job_id}"]'
    page.wait("the job in the list", lambda: page.css(row))
    assert "queued" in page.read(row) and "tiny-qwen3-vl" in page.read(row)
    page.click(row)
    page.wait_text("#job-status", "queued")
    browser.execute_script("window.notReloaded = true")

    relay.complete(relay.claim(job_id, "preprocess"))
    warmup = relay.claim(job_id, "warmup")
    for step in range(1, 8):
        report(warmup, step)
    page.wait_text('.phase[data-phase="preprocess"] .phase-status', "succeeded")
    page.wait_text('.phase[data-phase="warmup"] .phase-steps', "step 7 / 30 · epoch 1")
    for step in range(8, 15):
        report(warmup, step)
    page.wait_text('.phase[data-phase="warmup"] .phase-steps', "step 14 / 30 · epoch 2")
    assert page.phase("warmup", ".phase-status") == "running"
    assert page.phase("warmup", ".pool") == "a10 · NVIDIA A10"
    assert page.read('.phase[data-phase="warmup"] .bar', "aria-valuenow") == "70"
    points = page.read('#loss-chart polyline[data-series="warmup"]', "points")
    assert len(points.split()) == 14
    assert page.read('#lr-chart polyline[data-series="warmup"]', "points")
    assert "phase_started" in page.texts("#timeline .event .type")
    assert browser.execute_script("return window.notReloaded") is True
    browser.save_screenshot(SCREENSHOT or str(tmp_path / "dashboard.png"))

    page.click("#cancel-job")
    browser.switch_to.alert.accept()
    page.wait_text("#job-status", "cancelling")
    assert api.get(f"v1/jobs/{job_id}").json()["status"] == "cancelling"
    assert report(warmup, 15) is True  # the worker sees the request at its next step
    with session_scope() as session:
        runs.acknowledge_cancel(session, warmup)
    page.wait_text("#job-status", "cancelled")
    page.wait_text('.phase[data-phase="warmup"] .phase-status', "cancelled")
    page.wait_text('.phase[data-phase="final"] .phase-status', "cancelled")
    assert api.get(f"v1/jobs/{job_id}").json()["status"] == "cancelled"
    page.wait("job_cancelled in the timeline", lambda: page.css('[data-type="job_cancelled"]'))

    page.click('.phase[data-phase="warmup"] button.requeue')
    page.wait_text('.phase[data-phase="warmup"] .phase-status', "queued")
    warmup_now = next(
        p for p in api.get(f"v1/jobs/{job_id}").json()["phases"] if p["name"] == "warmup"
    )
    assert (warmup_now["status"], warmup_now["attempt"]) == ("queued", 2)
    assert browser.execute_script("return window.notReloaded") is True


def publish_export(job_id: str) -> tuple[str, dict[str, Any]]:
    """What a final run uploads before it completes: the adapter and its evaluation."""
    prefix = layout.run_prefix(job_id, "final", 1)
    report = {
        "schema": "relaytune.evaluation.v1",
        "num_samples": 2,
        "base": {"exact_match": 0.0, "token_accuracy": 0.25, "rouge_l": 0.2, "val_loss": 3.1},
        "adapter": {"exact_match": 0.5, "token_accuracy": 0.75, "rouge_l": 0.8, "val_loss": 1.2},
        "delta": {"exact_match": 0.5, "token_accuracy": 0.5, "rouge_l": 0.6, "val_loss": -1.9},
        "samples": [
            {
                "file": "case1.png",
                "reference": "capacitor 1",
                "base_answer": "resistor",
                "adapter_answer": "capacitor 1",
            }
        ],
    }
    store = get_store()
    store.put_bytes(layout.evaluation_key(prefix), json.dumps(report).encode())
    store.put_bytes(layout.adapter_prefix(prefix) + "/adapter_config.json", b'{"r": 8}')
    return prefix, report


def test_a_finished_job_shows_its_evaluation_and_its_adapter_downloads(
    api_url: str, browser: Any, tmp_path: Path
) -> None:
    _, page, job_id = open_new_job(api_url, browser)
    page.wait_text("#job-status", "queued")
    assert not page.enabled("#download-adapter")

    relay.complete(relay.claim(job_id, "preprocess"))
    relay.complete(relay.claim(job_id, "warmup"))
    final = relay.claim(job_id, "final")
    prefix, _ = publish_export(job_id)
    with session_scope() as session:
        runs.complete_phase(session, final, output_key=prefix, summary={})
    page.wait_text("#job-status", "succeeded")
    page.wait("the evaluation", lambda: page.css('#evaluation tr[data-metric="exact_match"]'))
    row = page.read('#evaluation tr[data-metric="exact_match"]').split()
    assert row == ["exact_match", "0", "0.5000", "0.5000"]
    assert "capacitor 1" in page.read("#evaluation .samples")
    assert not page.enabled("#cancel-job")

    page.click("#download-adapter")
    downloaded = tmp_path / "downloads" / f"relaytune-{job_id}-adapter.zip"
    page.wait("the downloaded adapter", downloaded.is_file)
    with zipfile.ZipFile(io.BytesIO(downloaded.read_bytes())) as archive:
        assert archive.read("adapter_config.json") == b'{"r": 8}'


def test_a_refused_key_is_said_so_and_nothing_is_shown(api_url: str, browser: Any) -> None:
    page = Page(browser, api_url)
    page.sign_in("rt_not-a-key")
    page.wait_text("#sign-in-error", "The API refused this key.")
    assert page.texts("#jobs") == []


def test_the_page_reads_the_event_stream_and_resumes_it_where_it_dropped(
    clean_db: None, recorded_dispatch: RecordingDispatcher, browser: Any
) -> None:
    log = StreamLog(cut_after=3)
    app = create_app()
    app.add_middleware(EventStreamStandIn, log=log)
    with live_api(app) as base:
        url = f"{base}/"
        api, page, job_id = open_new_job(url, browser)
        page.wait_text("#live-mode", "live (stream)")

        relay.complete(relay.claim(job_id, "preprocess"))
        warmup = relay.claim(job_id, "warmup")
        for step in range(1, 8):
            report(warmup, step)
        page.wait_text('.phase[data-phase="warmup"] .phase-steps', "step 7 / 30 · epoch 1")
        relay.cancel(job_id)
        with session_scope() as session:
            runs.acknowledge_cancel(session, warmup)
        page.wait_text("#job-status", "cancelled")
        # The page stops following once the job has finished and its events are in: on the
        # stream's `end`, or, when a connection drops after the job's last event, without
        # reconnecting. Which of the two depends on where the stand-in's cuts fall.
        page.wait("the page to stop following", lambda: page.texts("#live-mode") == [""])

        # Every event once, in order, across the dropped connections.
        events = api.get(f"v1/jobs/{job_id}/events").json()
        listed = [e["id"] for e in events if e["type"] != "metrics"][::-1]  # newest first
        page.wait(
            f"the events {listed} listed once each",
            lambda: (
                [int(e.get_attribute("data-event-id")) for e in page.all("#timeline .event")]
                == listed
            ),
        )
        points = page.read('#loss-chart polyline[data-series="warmup"]', "points")
        assert len(points.split()) == 7
        resumed = log.last_event_ids[1:]
        assert log.last_event_ids[0] == 0 and len(resumed) >= 2
        assert resumed == sorted(resumed) and resumed[0] > 0
        assert log.authorizations == {api.headers["Authorization"]}


def test_an_event_committed_after_a_newer_one_still_shows(api_url: str, browser: Any) -> None:
    """Ids are taken at insert but seen at commit: a worker's write may take id N and commit
    after a user's write took N+1; the page lists N once it is there."""
    _, page, job_id = open_new_job(api_url, browser)
    page.wait_text("#job-status", "queued")

    shown = '#timeline [data-type="model_loaded"]'
    with session_scope() as slow:
        emit(slow, job_id, EventType.MODEL_LOADED, phase="preprocess", attempt=1, seconds=1.5)
        slow.flush()  # takes its id now, commits later
        with session_scope() as quick:
            emit(quick, job_id, EventType.BUDGET_CHANGED, max_cost="5")
        page.wait("the newer event", lambda: page.css('#timeline [data-type="budget_changed"]'))
        assert page.all(shown) == []
    page.wait("the event committed late", lambda: page.css(shown))
    listed = [int(e.get_attribute("data-event-id")) for e in page.all("#timeline .event")]
    assert listed == sorted(listed, reverse=True)
