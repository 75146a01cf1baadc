"""Render a kustomization the way `kustomize build` does, for the features deploy/k8s uses:
resources (files and kustomization directories), namespace, labels (metadata only), images,
configMapGenerator and secretGenerator from env files (name hashes disabled) and
strategic-merge patches by path. Anything else is refused, so an unsupported field is never
silently ignored. Used by the tests, which have no kustomize binary and no network.

    python deploy/k8s/render.py deploy/k8s/overlays/example > relaytune.yaml
"""

from __future__ import annotations

import base64
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]
SUPPORTED = {
    "apiVersion", "kind", "resources", "namespace", "labels", "images",
    "configMapGenerator", "secretGenerator", "generatorOptions", "patches",
}  # fmt: skip
# Kinds without a namespace among those deploy/k8s uses.
CLUSTER_SCOPED = {"Namespace"}


class UnsupportedKustomization(ValueError):
    pass


def read_env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value
    return pairs


def _generated(kind: str, spec: dict[str, Any], root: Path, files: dict[str, Path]) -> Resource:
    if set(spec) - {"name", "envs"}:
        raise UnsupportedKustomization(f"{kind} generator {spec['name']}: {sorted(spec)}")
    data: dict[str, str] = {}
    for env in spec["envs"]:
        path = root / env
        data.update(read_env_file(files.get(str(path.resolve()), path)))
    if kind == "Secret":
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        return {"apiVersion": "v1", "kind": kind, "metadata": {"name": spec["name"]},
                "type": "Opaque", "data": encoded}  # fmt: skip
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": spec["name"]}, "data": data}


def _is_custom(resource: Resource) -> bool:
    """A custom resource's group has a dot and is not Kubernetes' own (*.k8s.io)."""
    group = resource["apiVersion"].rpartition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


def merge(target: Any, patch: Any, custom: bool) -> Any:
    """Strategic merge: maps merge, null deletes; lists of named maps merge by name (built-in
    kinds), other lists replace. Custom resources get a JSON merge patch (lists replace)."""
    if isinstance(target, dict) and isinstance(patch, dict):
        merged = dict(target)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = merge(target.get(key), value, custom) if key in target else value
        return merged
    named = (
        not custom
        and isinstance(target, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in [*target, *patch])
    )
    if named:
        result = list(target)
        for item in patch:
            index = next((i for i, t in enumerate(result) if t["name"] == item["name"]), None)
            if index is None:
                result.append(item)
            else:
                result[index] = merge(result[index], item, custom)
        return result
    return copy.deepcopy(patch)


def _pod_specs(resource: Resource) -> list[dict[str, Any]]:
    spec = resource.get("spec", {})
    if resource["kind"] in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
        return [spec["template"]["spec"]]
    return []


def _set_images(resource: Resource, images: list[dict[str, str]]) -> None:
    for pod in _pod_specs(resource):
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            for image in images:
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    new_tag = image.get("newTag", tag)
                    new = image.get("newName", name)
                    container["image"] = f"{new}:{new_tag}" if new_tag else new


def render(directory: Path, files: dict[str, Path] | None = None) -> list[Resource]:
    """The resources `kustomize build DIRECTORY` prints. `files` stands in for files that are
    not there, by resolved path (e.g. an env file's example for the real one)."""
    files = files or {}
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise UnsupportedKustomization(f"{directory}: {sorted(unknown)}")
    generators = {"configMapGenerator", "secretGenerator"} & set(kustomization)
    if generators and kustomization.get("generatorOptions") != {"disableNameSuffixHash": True}:
        raise UnsupportedKustomization(f"{directory}: generatorOptions other than no hash")
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            resources.extend(render(path, files))
        else:
            resources.extend(r for r in yaml.safe_load_all(path.read_text()) if r)
    for spec in kustomization.get("configMapGenerator", []):
        resources.append(_generated("ConfigMap", spec, directory, files))
    for spec in kustomization.get("secretGenerator", []):
        resources.append(_generated("Secret", spec, directory, files))
    for entry in kustomization.get("patches", []):
        if set(entry) != {"path"}:
            raise UnsupportedKustomization(f"{directory}: patch {entry}")
        patch = yaml.safe_load((directory / entry["path"]).read_text())
        key = (patch["kind"], patch["metadata"]["name"])
        matches = [i for i, r in enumerate(resources) if (r["kind"], r["metadata"]["name"]) == key]
        if len(matches) != 1:
            raise UnsupportedKustomization(f"{entry['path']}: {key} matches {len(matches)}")
        (index,) = matches
        resources[index] = merge(resources[index], patch, _is_custom(resources[index]))
    for resource in resources:
        for label in kustomization.get("labels", []):
            if set(label) != {"pairs"}:
                raise UnsupportedKustomization(f"{directory}: labels {label}")
            metadata = resource["metadata"]
            metadata["labels"] = {**metadata.get("labels", {}), **label["pairs"]}
        if "namespace" in kustomization and resource["kind"] not in CLUSTER_SCOPED:
            resource["metadata"]["namespace"] = kustomization["namespace"]
        _set_images(resource, kustomization.get("images", []))
    return resources


if __name__ == "__main__":
    yaml.safe_dump_all(render(Path(sys.argv[1])), sys.stdout, sort_keys=False)
