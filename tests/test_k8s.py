"""deploy/k8s rendered like `kustomize build`, validated against the Kubernetes schemas
(kubernetes-validate, offline) and KEDA's ScaledObject schema, and checked against the code it
runs: commands that exist, settings that exist, a GPU of the pool's type per worker, a queue per
ScaledObject, time to checkpoint on SIGTERM, no committed secrets."""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from orchestrator.dispatch import default_queue
from orchestrator.plan import DEFAULT_POOLS
from orchestrator.settings import Settings
from services.cli import main as cli

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
OVERLAY = K8S / "overlays" / "example"
KUBERNETES_VERSION = "1.30"
KEDA_SCHEMA = json.loads((K8S / "schemas" / "scaledobject-keda-v2.json").read_text())

_spec = importlib.util.spec_from_file_location("k8s_render", K8S / "render.py")
assert _spec and _spec.loader
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)

Resource = dict[str, Any]


def rendered() -> list[Resource]:
    """The example overlay, its secrets.env standing in for by the committed example."""
    secrets = OVERLAY / "secrets.env"
    resources: list[Resource] = render.render(
        OVERLAY, {str(secrets.resolve()): OVERLAY / "secrets.env.example"}
    )
    return resources


RESOURCES = rendered()


def find(kind: str, name: str) -> Resource:
    (resource,) = [r for r in RESOURCES if r["kind"] == kind and r["metadata"]["name"] == name]
    return resource


def workloads() -> list[Resource]:
    return [r for r in RESOURCES if r["kind"] in {"Deployment", "Job"}]


def containers(resource: Resource) -> list[dict[str, Any]]:
    pod = resource["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def worker_container(pool: str) -> dict[str, Any]:
    deployment = find("Deployment", f"relaytune-worker-{pool}")
    container: dict[str, Any]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def validate(resource: Resource) -> None:
    if resource["kind"] == "ScaledObject":
        jsonschema.validate(resource, KEDA_SCHEMA, cls=jsonschema.Draft7Validator)
    else:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_every_resource_follows_its_schema() -> None:
    jsonschema.Draft7Validator.check_schema(KEDA_SCHEMA)
    kinds = {r["kind"] for r in RESOURCES}
    assert {"Namespace", "Deployment", "Service", "Job", "ScaledObject", "PodDisruptionBudget",
            "ConfigMap", "Secret"} <= kinds  # fmt: skip
    for resource in RESOURCES:
        validate(resource)
    assert {r["metadata"].get("namespace") for r in RESOURCES if r["kind"] != "Namespace"} == {
        "relaytune"
    }
    # The base renders and validates alone too.
    for resource in render.render(K8S / "base"):
        validate(resource)


def test_the_schemas_bite() -> None:
    deployment = copy.deepcopy(find("Deployment", "relaytune-worker-t4"))
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 120
    with pytest.raises(kubernetes_validate.ValidationError, match="terminationGracePeriod"):
        validate(deployment)
    scaled = copy.deepcopy(find("ScaledObject", "relaytune-worker-t4"))
    scaled["spec"]["minReplicas"] = 0
    with pytest.raises(jsonschema.ValidationError, match="minReplicas"):
        validate(scaled)
    scaled = copy.deepcopy(find("ScaledObject", "relaytune-worker-t4"))
    del scaled["spec"]["triggers"][0]["metadata"]["listName"]
    with pytest.raises(jsonschema.ValidationError, match="listName"):
        validate(scaled)


def test_each_pool_has_a_worker_on_one_gpu_of_its_type() -> None:
    products = {}
    for pool in DEFAULT_POOLS.values():
        deployment = find("Deployment", f"relaytune-worker-{pool}")
        pod = deployment["spec"]["template"]["spec"]
        products[pool] = pod["nodeSelector"]["nvidia.com/gpu.product"]
        container = worker_container(pool)
        assert container["command"] == ["relaytune", "worker", "--pool", pool]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        # Only the worker holds the GPU; the init container never asks for one.
        for init in pod.get("initContainers", []):
            assert "nvidia.com/gpu" not in init.get("resources", {}).get("limits", {})
        assert deployment["spec"]["replicas"] == 0  # KEDA scales it
    assert len(set(products.values())) == len(products), products
    # The overlay's patch reached the A100 pool and nothing else.
    assert products["a100"] == "NVIDIA-A100-80GB-PCIe"
    assert products["t4"] == "Tesla-T4"


def test_workers_get_time_to_checkpoint_on_sigterm() -> None:
    for pool in DEFAULT_POOLS.values():
        pod = find("Deployment", f"relaytune-worker-{pool}")["spec"]["template"]["spec"]
        grace = pod["terminationGracePeriodSeconds"]
        assert grace >= 120, pool
        env = {e["name"]: e["value"] for e in worker_container(pool).get("env", [])}
        # The phase's checkpoint budget ends before the kubelet kills the pod.
        assert 0 < int(env["RELAYTUNE_SHUTDOWN_GRACE_SECONDS"]) < grace, pool


def test_each_scaled_object_scales_its_pool_on_its_queue_from_zero() -> None:
    broker = urlsplit(render.read_env_file(OVERLAY / "secrets.env.example")["RELAYTUNE_BROKER_URL"])
    for pool in DEFAULT_POOLS.values():
        scaled = find("ScaledObject", f"relaytune-worker-{pool}")["spec"]
        assert scaled["scaleTargetRef"] == {"name": f"relaytune-worker-{pool}"}  # a Deployment
        assert scaled["minReplicaCount"] == 0
        (trigger,) = scaled["triggers"]
        assert trigger["type"] == "redis"
        metadata = trigger["metadata"]
        assert metadata["listName"] == default_queue(pool) == f"gpu.{pool}"
        assert metadata["address"] == broker.netloc
        assert metadata["databaseIndex"] == broker.path.lstrip("/")
        assert metadata["activationListLength"] == "0"  # one queued phase wakes the pool
    assert find("ScaledObject", "relaytune-worker-a100")["spec"]["maxReplicaCount"] == 8


def test_disruption_budgets_cover_the_api_and_every_pool() -> None:
    budgets = [r for r in RESOURCES if r["kind"] == "PodDisruptionBudget"]
    for deployment in (r for r in RESOURCES if r["kind"] == "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [
            b for b in budgets
            if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]  # fmt: skip
        assert len(covering) == 1, deployment["metadata"]["name"]
        # The selector picks this Deployment's pods only.
        assert covering[0]["spec"]["selector"] == deployment["spec"]["selector"]


def test_every_setting_is_one_relaytune_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = {f"RELAYTUNE_{name.upper()}" for name in Settings.model_fields}
    config = find("ConfigMap", "relaytune-config")["data"]
    secret = {
        k: base64.b64decode(v).decode()
        for k, v in find("Secret", "relaytune-secrets")["data"].items()
    }
    names = set(config) | set(secret)
    for workload in workloads():
        for container in containers(workload):
            names |= {e["name"] for e in container.get("env", [])}
            sources = {next(iter(s.values()))["name"] for s in container.get("envFrom", [])}
            assert sources == {"relaytune-config", "relaytune-secrets"}, workload["metadata"]
    for name in names:
        assert name in fields, f"{name} is no setting"
    for key, value in {**config, **secret}.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)
    assert settings.environment == "production"
    assert settings.s3_bucket == "relaytune-prod"  # the overlay's patch
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.allow_hub_downloads is False


def test_no_secret_is_committed() -> None:
    assert not any(r["kind"] == "Secret" for r in render.render(K8S / "base"))
    example = render.read_env_file(OVERLAY / "secrets.env.example")
    for name in ("RELAYTUNE_S3_SECRET_KEY", "RELAYTUNE_S3_ACCESS_KEY", "RELAYTUNE_DATABASE_URL"):
        assert "change-me" in example[name], name
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(OVERLAY / "secrets.env")], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "secrets.env is not ignored by git"
    # Without secrets.env the overlay does not render (kustomize refuses too).
    if not (OVERLAY / "secrets.env").exists():
        with pytest.raises(FileNotFoundError, match=r"secrets\.env"):
            render.render(OVERLAY)


def test_relaytune_commands_exist() -> None:
    seen = set()
    for workload in workloads():
        for container in containers(workload):
            command = container["command"]
            if command[:2] == ["sh", "-c"]:
                lines = command[2].replace("&&", ";;").split(";;")
                argvs = [shlex.split(line) for line in lines if "relaytune" in line]
                argvs = [a[a.index("relaytune") :] for a in argvs]
            else:
                argvs = [command]
            for argv in argvs:
                if argv[0] != "relaytune":
                    continue
                result = CliRunner().invoke(cli.app, [*argv[1:], "--help"])
                assert result.exit_code == 0, f"{shlex.join(argv)}\n{result.output}"
                seen.add(argv[1])
    assert seen == {"worker", "migrate", "make-tiny-model", "models"}
    job = find("Job", "relaytune-migrate")
    migrate, register = containers(job)
    assert migrate["command"] == ["relaytune", "migrate"]
    assert migrate["image"].startswith("registry.example.com/relaytune/api:")
    assert register["image"].startswith("registry.example.com/relaytune/worker:")


def test_the_migration_job_registers_the_tiny_default_model_as_compose_does() -> None:
    """After the schema, the tiny model is written where `models add` reads it, and
    registered under its name; the same lines as docker-compose's tiny-model service."""
    job = find("Job", "relaytune-migrate")
    pod = job["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["migrate"]  # runs first, to the end
    (register,) = pod["containers"]
    script = register["command"][2]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    composed = compose["tiny-model"]["command"][2].replace("$$", "$")  # compose's escape
    assert script.split() == composed.split()
    root = find("ConfigMap", "relaytune-config")["data"]["RELAYTUNE_MODEL_ROOT"]
    assert f"--from {root}/tiny-qwen3-vl" in script
    assert [m["mountPath"] for m in register["volumeMounts"]] == [root]


def test_the_api_serves_the_app_behind_its_service_and_probes() -> None:
    from services.api.main import app

    deployment = find("Deployment", "relaytune-api")
    (container,) = containers(deployment)
    argv = container["command"]
    assert argv[:2] == ["uvicorn", "services.api.main:app"]
    port = int(argv[argv.index("--port") + 1])
    assert container["ports"] == [{"name": "http", "containerPort": port}]
    paths = set(app.openapi()["paths"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"/healthz", "/readyz"} <= paths
    service = find("Service", "relaytune-api")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_worker_probes_ping_the_node_the_worker_names(monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.celery_app

    started: list[list[str]] = []
    monkeypatch.setattr(worker.celery_app.app, "worker_main", started.append)
    monkeypatch.setattr(cli, "pool_queue", default_queue)
    for pool in DEFAULT_POOLS.values():
        container = worker_container(pool)
        assert CliRunner().invoke(cli.app, container["command"][1:]).exit_code == 0
        options = started.pop()
        node = options[options.index("--hostname") + 1].replace("%h", "$HOSTNAME")
        for probe in ("startupProbe", "livenessProbe"):
            shell, flag, line = container[probe]["exec"]["command"]
            assert (shell, flag) == ("sh", "-c")  # so that $HOSTNAME (the pod's name) expands
            ping = shlex.split(line)
            assert ping[:5] == ["celery", "-A", "worker.celery_app", "inspect", "ping"]
            assert ping[ping.index("-d") + 1] == node, pool


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl to compare with")
def test_the_renderer_agrees_with_kubectl_kustomize(tmp_path: Path) -> None:
    copied = tmp_path / "k8s"
    shutil.copytree(K8S, copied)
    secrets = copied / "overlays" / "example" / "secrets.env"
    shutil.copy(OVERLAY / "secrets.env.example", secrets)
    built = subprocess.run(
        ["kubectl", "kustomize", str(secrets.parent)], capture_output=True, text=True, check=True
    )

    def decoded(resources: list[Resource]) -> dict[tuple[str, str], Resource]:
        by_name = {}
        for resource in resources:
            if resource["kind"] == "Secret":  # kubectl wraps long base64 lines
                data = resource["data"]
                resource["data"] = {k: base64.b64decode(v) for k, v in data.items()}
            by_name[resource["kind"], resource["metadata"]["name"]] = resource
        return by_name

    expected = decoded([r for r in yaml.safe_load_all(built.stdout) if r])
    assert decoded(render.render(secrets.parent)) == expected


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("commonLabels: {a: b}\n")
    with pytest.raises(render.UnsupportedKustomization, match="commonLabels"):
        render.render(tmp_path)
