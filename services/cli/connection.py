"""Where the client commands find the API and their key, and how a failure to reach it reads."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from orchestrator.settings import get_settings
from services.cli.client import ApiError, Client, Disconnected, Unreachable

DEFAULT_URL = "http://127.0.0.1:7860"
URL_FILE = "api-url"  # in the data dir: where `relaytune up` serves, for the client commands

F = TypeVar("F", bound=Callable[..., Any])


def write_url_file(url: str) -> None:
    (get_settings().data_dir / URL_FILE).write_text(url + "\n")


def api_url(explicit: str | None) -> str:
    """--url or RELAYTUNE_URL, else what `relaytune up` last wrote, else the default."""
    if explicit:
        return explicit.rstrip("/")
    url_file = get_settings().data_dir / URL_FILE
    if url_file.is_file():
        written = url_file.read_text().strip()
        if written:
            return written
    return DEFAULT_URL


def api_key(explicit: str | None) -> str:
    if explicit:
        return explicit
    key_file = get_settings().data_dir / "api-key"
    if key_file.exists():
        return key_file.read_text().strip()
    raise click.UsageError("no API key: pass --api-key, set RELAYTUNE_API_KEY, or run `up` first")


def client_options(command: F) -> F:
    """--url and --api-key on a client command, passed on as one `client` argument."""

    @click.option(
        "--url",
        "--api-url",
        "url",
        envvar=["RELAYTUNE_URL", "RELAYTUNE_API_URL"],
        default=None,
        help=f"The API (RELAYTUNE_URL); default: where `relaytune up` serves, else {DEFAULT_URL}.",
    )
    @click.option(
        "--api-key",
        "key",
        envvar="RELAYTUNE_API_KEY",
        default=None,
        help="Default: the key `relaytune up` wrote into the data dir.",
    )
    @functools.wraps(command)
    def wrapper(*args: Any, url: str | None, key: str | None, **kwargs: Any) -> Any:
        return command(*args, client=Client(api_url(url), api_key(key)), **kwargs)

    return wrapper  # type: ignore[return-value]


class ClientErrors(click.Group):
    """Reports the API's errors and an unreachable API the same way for every command: one
    line (plus a line per problem the API listed), never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Unreachable as exc:
            click.echo(
                f"relaytune: the API is not reachable at {exc.url}; start it with `relaytune up`",
                err=True,
            )
            ctx.exit(2)
        except Disconnected as exc:
            click.echo(
                f"relaytune: the connection to the API at {exc.url} broke off: {exc.reason}",
                err=True,
            )
            ctx.exit(2)
        except ApiError as exc:
            click.echo("relaytune: " + "\n".join(exc.lines()), err=True)
            ctx.exit(1)
