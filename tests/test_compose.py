"""docker-compose.yml against the Compose schema and against the code it runs: commands that
exist, settings that exist, ports and Celery node names that match, secrets without defaults,
one GPU per worker, and the init service's admin key bootstrap."""

from __future__ import annotations

import json
import re
import shlex
import stat
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from orchestrator.auth import authenticate_key, revoke_api_key
from orchestrator.db import session_scope
from orchestrator.plan import DEFAULT_POOLS
from orchestrator.settings import Settings
from services.cli import main as cli

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
SCHEMA = json.loads((ROOT / "deploy" / "compose-schema.json").read_text())
WORKERS = {name: s for name, s in SERVICES.items() if name.startswith("worker-")}
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}; $$ is a literal $.
VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|ROOT_USER|TOKEN")


class MissingVariable(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation, for the forms the file uses."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, operator, argument = match[1], match[2] or "", match[3] or ""
        value = env.get(name)
        unset = value is None or (":" in operator and value == "")
        if operator.endswith("?") and unset:
            raise MissingVariable(f"{name}: {argument}")
        if operator.endswith("-") and unset:
            return argument
        return value or ""

    return VARIABLE.sub(substitute, value)


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def relaytune_env() -> dict[str, str]:
    """The environment every relaytune container gets, as .env.example fills it in."""
    env: dict[str, str] = interpolate(COMPOSE["x-relaytune-env"], env_example())
    return env


def invocations(command: list[str] | str) -> list[list[str]]:
    """The programs a service's command runs: the argv, or each `&&` part of an `sh -c`."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if argv[:2] == ["sh", "-c"]:
        return [shlex.split(part) for part in argv[2].split("&&")]
    return [argv]


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli.app, list(args), catch_exceptions=False)


def test_the_file_follows_the_compose_schema() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.validate(COMPOSE, SCHEMA, cls=jsonschema.Draft7Validator)
    # The schema bites: a misspelt key, a bad condition, count together with device_ids.
    validator = jsonschema.Draft7Validator(SCHEMA)
    broken = yaml.safe_load(COMPOSE_TEXT)
    broken["services"]["api"]["helthcheck"] = {}
    broken["services"]["api"]["depends_on"]["init"]["condition"] = "service_done"
    device = broken["services"]["worker-t4"]["deploy"]["resources"]["reservations"]["devices"][0]
    device["count"] = 1
    messages = " ".join(e.message for e in validator.iter_errors(broken))
    assert "helthcheck" in messages and "service_done" in messages
    assert "should not be valid" in messages


def test_each_pool_has_one_worker_on_its_own_gpu() -> None:
    pools = {invocations(s["command"])[0][-1]: name for name, s in WORKERS.items()}
    assert sorted(pools) == sorted(DEFAULT_POOLS.values())
    gpus = {}
    for name, service in WORKERS.items():
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert "count" not in device, name  # `count: 1` alone gives every worker GPU 0
        assert device["capabilities"] == ["gpu"]
        (gpu,) = device["device_ids"]
        pool = invocations(service["command"])[0][-1]
        assert re.fullmatch(rf"\$\{{RELAYTUNE_{pool.upper()}_GPU:-\d+\}}", gpu), gpu
        gpus[name] = interpolate(gpu, {})
    assert len(set(gpus.values())) == len(gpus), gpus  # by default, distinct GPUs
    # The variable pins the GPU.
    assert interpolate(gpu, {f"RELAYTUNE_{pool.upper()}_GPU": "GPU-3f2a"}) == "GPU-3f2a"


def test_secrets_have_no_defaults_and_the_example_sets_them() -> None:
    references = [m for m in VARIABLE.finditer(COMPOSE_TEXT) if m[1]]
    secrets = {m[1] for m in references if SECRET_NAME.search(m[1])}
    assert {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "RELAYTUNE_S3_SECRET_KEY"} <= secrets
    for match in references:
        if match[1] in secrets:
            assert match[2] == ":?", f"{match[0]} has a default or may be empty"
    example = env_example()
    assert secrets <= example.keys()
    interpolate(COMPOSE, example)  # a filled-in .env lets compose start
    for name in sorted(secrets):
        without = {k: v for k, v in example.items() if k != name}
        with pytest.raises(MissingVariable, match=name):
            interpolate(COMPOSE, without)
        with pytest.raises(MissingVariable, match=name):
            interpolate(COMPOSE, {**example, name: ""})


def test_every_setting_is_one_relaytune_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = {f"RELAYTUNE_{name.upper()}" for name in Settings.model_fields}
    for name, service in SERVICES.items():
        for key in service.get("environment", {}):
            if key.startswith("RELAYTUNE_"):
                assert key in fields, f"{name}: {key} is no setting"
    env = relaytune_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)
    assert settings.environment == "production"
    assert settings.s3_endpoint == "http://minio:9000"
    assert settings.s3_access_key == env_example()["RELAYTUNE_S3_ACCESS_KEY"]
    assert settings.database_url.startswith("postgresql+psycopg://relaytune:")
    assert settings.allow_hub_downloads is False


def test_relaytune_commands_exist() -> None:
    seen = set()
    for name, service in SERVICES.items():
        if not str(service.get("image", "")).startswith("relaytune-") or "command" not in service:
            continue
        if name == "tiny-model":  # a shell `case`: checked below
            continue
        for argv in invocations(service["command"]):
            if argv[0] != "relaytune":
                continue
            result = invoke(*argv[1:], "--help")
            assert result.exit_code == 0, f"{name}: {shlex.join(argv)}\n{result.output}"
            seen.add(argv[1])
    assert {"worker", "migrate", "api-key"} <= seen
    tiny = SERVICES["tiny-model"]
    root = next(v.split(":")[1] for v in tiny["volumes"] if v.startswith("models:"))
    writes_then_registers = (
        "tiny-qwen3-vl) relaytune make-tiny-model && "
        f"exec relaytune models add tiny-qwen3-vl --from {root}/tiny-qwen3-vl ;;"
    )
    assert writes_then_registers in tiny["command"][2]
    assert invoke("make-tiny-model", "--help").exit_code == 0
    assert invoke("models", "add", "--help").exit_code == 0
    # registering writes the job store and the bucket: both exist first
    assert {"init", "createbucket"} <= set(tiny["depends_on"])


def test_api_serves_the_app_on_the_published_port() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    api = SERVICES["api"]
    (argv,) = invocations(api["command"])
    assert argv[:2] == ["uvicorn", "services.api.main:app"]
    from services.api.main import app

    assert isinstance(app, FastAPI)
    port = argv[argv.index("--port") + 1]
    assert [p.rsplit(":", 1)[-1] for p in api["ports"]] == [port]
    assert f"http://127.0.0.1:{port}/healthz" in api["healthcheck"]["test"][-1]
    assert TestClient(app).get("/healthz").status_code == 200  # the lifespan is not run


def test_worker_healthchecks_ping_the_node_the_worker_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from celery import Celery

    import worker.celery_app

    assert isinstance(worker.celery_app.app, Celery)  # what `celery -A worker.celery_app` loads
    started: list[list[str]] = []
    monkeypatch.setattr(worker.celery_app.app, "worker_main", started.append)
    monkeypatch.setattr(cli, "pool_queue", lambda pool: f"gpu.{pool}")
    for name, service in WORKERS.items():
        argv = invocations(service["command"])[0]
        assert invoke(*argv[1:]).exit_code == 0
        options = started.pop()
        node = options[options.index("--hostname") + 1].replace("%h", "$HOSTNAME")
        kind, command = interpolate(service["healthcheck"]["test"], {})
        assert kind == "CMD-SHELL"
        ping = shlex.split(command)
        assert ping[:5] == ["celery", "-A", "worker.celery_app", "inspect", "ping"], name
        assert ping[ping.index("-d") + 1] == node, name


def test_long_running_services_have_healthchecks_and_wait_for_init() -> None:
    for name, service in SERVICES.items():
        if service.get("restart") == "no":
            continue  # a one-shot: others wait for it to complete
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name in ["api", *WORKERS]:
        assert SERVICES[name]["depends_on"]["init"] == {
            "condition": "service_completed_successfully"
        }
        assert SERVICES[name]["depends_on"]["createbucket"] == {
            "condition": "service_completed_successfully"
        }
    for name, dependencies in ((n, s.get("depends_on", {})) for n, s in SERVICES.items()):
        for dependency, rule in dependencies.items():
            one_shot = SERVICES[dependency].get("restart") == "no"
            expected = "service_completed_successfully" if one_shot else "service_healthy"
            assert rule["condition"] == expected, f"{name} -> {dependency}"
    bucket = SERVICES["createbucket"]["command"][0]
    assert 'mc mb --ignore-existing "local/$$RELAYTUNE_S3_BUCKET"' in bucket


def _init_key_command(output: Path) -> list[str]:
    """The init service's key bootstrap, writing to OUTPUT instead of its volume."""
    migrate, bootstrap = invocations(SERVICES["init"]["command"])
    assert migrate == ["relaytune", "migrate"]
    assert bootstrap[bootstrap.index("--output") + 1].startswith("/var/lib/relaytune/admin-key/")
    volumes = SERVICES["init"]["volumes"]
    assert "admin-key:/var/lib/relaytune/admin-key" in volumes
    bootstrap[bootstrap.index("--output") + 1] = str(output)
    return bootstrap[1:]


def test_init_bootstraps_one_admin_key_only_while_none_exists(
    clean_db: None, tmp_path: Path
) -> None:
    key_file = tmp_path / "admin-key" / "api-key"
    command = _init_key_command(key_file)
    result = invoke(*command)
    assert result.exit_code == 0, result.output
    key = key_file.read_text().strip()
    assert key not in result.output  # written into the file only
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with session_scope() as session:
        assert authenticate_key(session, key).is_admin

    # Every later start: the key exists, nothing is created, the file is left alone.
    result = invoke(*command)
    assert result.exit_code == 0 and "none created" in result.output
    assert key_file.read_text().strip() == key
    assert invoke("api-key", "create", "--tenant", "acme").exit_code == 0  # not an admin key
    with session_scope() as session:
        revoke_api_key(session, authenticate_key(session, key))
    # With the only admin key revoked, the next start bootstraps a new one.
    assert invoke(*command).exit_code == 0
    assert key_file.read_text().strip() != key


def test_if_none_is_for_admin_keys_only() -> None:
    result = CliRunner().invoke(cli.app, ["api-key", "create", "--tenant", "x", "--if-none"])
    assert result.exit_code == 2 and "--admin" in result.output
