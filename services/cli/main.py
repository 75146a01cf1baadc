"""The `relaytune` command."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from orchestrator.settings import TINY_MODEL_NAME, get_settings
from services.cli import admin, datasets, jobs, models
from services.cli.client import Client
from services.cli.connection import ClientErrors, client_options, write_url_file

# Off a terminal (CI logs, `make demo | tee`) rich would wrap tables at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 120)
BASE_MODEL_HELP = (
    "A model the server knows: a registered model (`relaytune models list`), a directory "
    "under its model root, by name, or an "
    "allowed name. Defaults to the server's tiny Qwen3-VL."
)


def _require_worker_extra(command: str) -> None:
    """Worker-only commands train or write models: without torch they would end in an import
    traceback, so say at once what to install."""
    if importlib.util.find_spec("torch") is None:
        raise click.ClickException(
            f"relaytune {command} needs torch, which is not installed here: "
            "pip install 'relaytune[worker]'"
        )


def _use_data_dir(data_dir: Path | None) -> None:
    if data_dir is not None:
        os.environ["RELAYTUNE_DATA_DIR"] = str(data_dir.resolve())
        get_settings.cache_clear()


@click.group(cls=ClientErrors)
@click.version_option(package_name="relaytune", prog_name="relaytune")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the standalone stores live (RELAYTUNE_DATA_DIR).",
)
def app(data_dir: Path | None) -> None:
    """relaytune: few-shot LoRA fine-tuning of Qwen3-VL on a relay of GPU pools."""
    _use_data_dir(data_dir)


@app.command()
def migrate() -> None:
    """Create or upgrade the job store schema (alembic upgrade head)."""
    from orchestrator.migrate import upgrade_head

    upgrade_head(get_settings().database_url)
    console.print("schema is at head")


app.add_command(admin.api_key)
app.add_command(admin.pools)
app.add_command(admin.tenants)
app.add_command(admin.sweep)
app.add_command(models.models)
app.add_command(jobs.jobs)
app.add_command(datasets.datasets)


@app.command("make-tiny-model")
@click.argument("directory", type=click.Path(path_type=Path), required=False)
@click.option("--seed", default=0, show_default=True)
def make_tiny_model(directory: Path | None, seed: int) -> None:
    """Write a tiny random Qwen3-VL checkpoint (real architecture, tokenizer, processor) into
    DIRECTORY, by default where the default model lives: <model root>/tiny-qwen3-vl. Workers
    never write it themselves."""
    _require_worker_extra("make-tiny-model")
    from worker.tiny_model import write_tiny_model

    target = directory or get_settings().default_model_dir
    console.print(f"tiny Qwen3-VL at {write_tiny_model(target, seed=seed)}")


def pool_queue(pool: str) -> str:
    """The pool's queue as the store has it; gpu.POOL for a pool the store does not know."""
    from orchestrator.db import close_connections, session_scope
    from orchestrator.pools import queue_of

    with session_scope() as session:
        queue = queue_of(session, pool)
    close_connections()  # the worker's children open their own connections
    return queue


@app.command()
@click.option("--pool", required=True, help="The pool this worker serves (t4, a10, a100, ...).")
@click.option("--loglevel", default="INFO")
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=None,
    help="torch threads per phase (RELAYTUNE_WORKER_THREADS); 0 or unset chooses "
    "from the CPUs this worker may use.",
)
def worker(pool: str, loglevel: str, threads: int | None) -> None:
    """Run a Celery worker on the pool's queue: one process, a fresh child per phase."""
    _require_worker_extra("worker")
    if threads is not None:
        # The children read it from the settings, which they inherit with the environment.
        os.environ["RELAYTUNE_WORKER_THREADS"] = str(threads)
        get_settings.cache_clear()
    from worker.celery_app import app as celery_app

    queue = pool_queue(pool)
    console.print(f"worker for pool {pool} listens on queue {queue}")
    celery_app.worker_main(
        [
            "worker",
            "--queues",
            queue,
            "--concurrency",
            "1",
            "--pool",
            "prefork",
            "--max-tasks-per-child",
            "1",
            "--hostname",
            f"{pool}@%h",
            "--task-events",
            "--loglevel",
            loglevel,
        ]
    )


@app.command()
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=7860, show_default=True)
def api(host: str, port: int) -> None:
    """Serve the REST API."""
    import uvicorn

    uvicorn.run("services.api.main:app", host=host, port=port)


@app.command()
@click.option("--port", default=7860, show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def up(port: int, data_dir: Path | None) -> None:
    """Start API, one worker per pool, SQLite, an embedded Redis and local storage; restart a
    worker or the API that dies."""
    _require_worker_extra("up")
    from services.cli import standalone

    _use_data_dir(data_dir)
    try:
        listener = standalone.listen(port)
    except standalone.PortInUse as exc:
        raise click.ClickException(str(exc)) from exc
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    # Where the client commands find the API; written before the API can answer there.
    write_url_file(url)
    logs = settings.data_dir / "logs"
    standalone.log_events(console, logs / "up.log")
    env = {**os.environ, "RELAYTUNE_DATA_DIR": str(settings.data_dir)}
    tree = standalone.ProcessTree()
    stop = {"requested": False}

    def request_stop(*_: Any) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    ctx = click.get_current_context()
    try:
        if "RELAYTUNE_BROKER_URL" not in os.environ:
            env["RELAYTUNE_BROKER_URL"], redis = standalone.start_embedded_redis(settings.data_dir)
            tree.add("broker (redis)", redis)
        ctx.invoke(migrate)
        pool_names = _prepare_pools(settings.pools_file)
        from worker.tiny_model import is_complete

        # Workers never write it: a copy cut short by an earlier Ctrl-C is finished here.
        tiny_default = settings.default_base_model == TINY_MODEL_NAME
        if tiny_default and not is_complete(settings.default_model_dir):
            ctx.invoke(make_tiny_model, directory=settings.default_model_dir, seed=0)
        if tiny_default:
            standalone.register_tiny_model(settings.default_model_dir)
        key_file = settings.data_dir / "api-key"
        if not key_file.exists():
            from orchestrator.auth import create_api_key
            from orchestrator.db import session_scope

            with session_scope() as session:
                key_file.write_text(create_api_key(session, "local"))
            key_file.chmod(0o600)
        standalone.launch(tree, listener=listener, env=env, logs=logs, pools=pool_names)
        try:
            standalone.wait_ready(url, alive=lambda: tree.alive("api"))
        except RuntimeError as exc:
            raise click.ClickException(f"{exc}; see {logs / 'api.log'}") from exc
        console.print(
            f"relaytune is up at {url} (dashboard at {url}/, docs at {url}/docs); API key "
            f"in {key_file}; logs in {logs}. Ctrl-C stops everything."
        )
        while not stop["requested"]:
            tree.supervise()
            time.sleep(0.5)
    except standalone.ChildExited as exc:
        standalone.logger.error(
            "%s and cannot be restarted safely; stopping everything (see %s)", exc, logs
        )
        ctx.exit(1)
    finally:
        console.print("stopping relaytune …")
        tree.stop()
        listener.close()


def _prepare_pools(pools_file: Path | None) -> list[str]:
    """Upsert the pools file, if any; `up` starts one worker for every pool in the store."""
    from orchestrator import repository
    from orchestrator.db import session_scope
    from orchestrator.errors import RelaytuneError
    from orchestrator.pools import apply_pools_file

    try:
        with session_scope() as session:
            if pools_file is not None:
                apply_pools_file(session, pools_file)
            return [p.name for p in repository.pools(session)]
    except RelaytuneError as exc:
        raise click.ClickException(exc.message) from exc


def _overrides(items: tuple[str, ...]) -> dict[str, Any]:
    """NAME=VALUE pairs; a VALUE that parses as JSON is taken as JSON, else as a string."""
    import json

    values: dict[str, Any] = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            values[name] = json.loads(value)
        except json.JSONDecodeError:
            values[name] = value
    return values


def _pools_option(value: str | None) -> dict[str, str] | str | None:
    """ "auto", or PHASE=POOL pairs separated by commas."""
    if not value or value == "auto":
        return value
    pairs = [item.partition("=") for item in value.split(",")]
    if any(not sep or not phase or not pool for phase, sep, pool in pairs):
        raise click.BadParameter("use auto or PHASE=POOL[,PHASE=POOL...]", param_hint="--pools")
    return {phase.strip(): pool.strip() for phase, _, pool in pairs}


@app.command()
@click.option("--dataset", "dataset_id", required=True, help="An uploaded data set's id.")
@client_options
@click.option("--base-model", default=None, help=BASE_MODEL_HELP)
@click.option(
    "--hp",
    "overrides",
    multiple=True,
    metavar="NAME=VALUE",
    help="A hyperparameter, e.g. --hp total_epochs=8 (JSON values).",
)
@click.option(
    "--pools",
    default=None,
    metavar="auto|PHASE=POOL,...",
    help="auto, or pools per phase, e.g. warmup=a100,final=a100.",
)
@click.option("--max-cost", default=None, help="Budget to check the plans against.")
@click.option(
    "--validation-dataset",
    "validation_dataset_id",
    default=None,
    help="An uploaded data set's id the job would validate and evaluate on.",
)
def estimate(
    dataset_id: str,
    client: Client,
    base_model: str | None,
    overrides: tuple[str, ...],
    pools: str | None,
    max_cost: str | None,
    validation_dataset_id: str | None,
) -> None:
    """What a job on DATASET would take and cost on each plan, side by side."""
    from services.cli.render import plans_table

    body: dict[str, Any] = {"dataset_id": dataset_id, "hyperparameters": _overrides(overrides)}
    if validation_dataset_id:
        body["validation_dataset_id"] = validation_dataset_id
    if base_model:
        body["base_model"] = base_model
    if pools:
        body["pools"] = _pools_option(pools)
    if max_cost is not None:
        body["max_cost"] = max_cost
    console.print(plans_table(client.estimate(body)))


@app.command(
    help="Upload PATH and submit a job on it. PATH: "
    + datasets.DATASET_PATH_HELP
    + " With --wait: "
    + jobs.WATCH_HELP
)
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@client_options
@click.option("--base-model", default=None, help=BASE_MODEL_HELP)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="NAME=VALUE",
    help="A hyperparameter, e.g. --set total_epochs=8 (JSON values).",
)
@click.option(
    "--validation",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="A second data set (same forms as PATH) that the job validates and evaluates on, "
    "whole, instead of holding out samples of PATH.",
)
@click.option("--wait/--no-wait", default=False, help="Follow the job until it ends.")
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write the adapter zip (with --wait).",
)
def submit(
    path: Path,
    client: Client,
    base_model: str | None,
    overrides: tuple[str, ...],
    validation: Path | None,
    wait: bool,
    output: Path | None,
) -> None:
    hyperparameters = _overrides(overrides)
    dataset = datasets.upload(client, path)
    body: dict[str, Any] = {"dataset_id": dataset["id"], "hyperparameters": hyperparameters}
    if validation is not None:
        body["validation_dataset_id"] = datasets.upload(client, validation)["id"]
    if base_model:
        body["base_model"] = base_model
    job = client.submit(body)
    console.print(f"job {job['id']} submitted")
    if not wait:
        return
    job = jobs.watch_to_end(client, job["id"])
    target = output or get_settings().data_dir / "adapters" / f"{job['id']}.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    client.download_adapter(job["id"], target)
    console.print(f"adapter (PEFT format): {target.resolve()}")


if __name__ == "__main__":
    sys.exit(app())
