"""Renders the kustomize base in ``deploy/k8s`` the way ``kubectl apply -k`` does,
for the parts of kustomize it uses: ``resources`` (files), ``namespace``,
``labels`` (metadata only) and ``images``. Anything else in the kustomization
fails the render, so that a new feature there gets a renderer (and a test) too.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "namespace", "labels", "resources", "images"}
# Kinds that live outside namespaces (kustomize leaves their metadata.namespace alone).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "StorageClass"}

Resource = dict[str, Any]


def load_kustomization(base: Path) -> dict[str, Any]:
    kustomization: dict[str, Any] = yaml.safe_load((base / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise ValueError(f"kustomization fields this renderer does not know: {sorted(unknown)}")
    return kustomization


def render(base: Path) -> list[Resource]:
    """Every resource of the base, transformed as kustomize would."""
    kustomization = load_kustomization(base)
    resources: list[Resource] = []
    for entry in kustomization["resources"]:
        path = base / entry
        if not path.is_file():
            raise FileNotFoundError(f"{entry}: kustomize resources here are files")
        resources += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    namespace = kustomization.get("namespace")
    labels: dict[str, str] = {}
    for group in kustomization.get("labels", []):
        if group.get("includeSelectors") or group.get("includeTemplates"):
            raise ValueError("labels with includeSelectors/includeTemplates are not rendered")
        labels.update(group["pairs"])
    images = {image["name"]: image for image in kustomization.get("images", [])}
    return [_transform(r, namespace, labels, images) for r in resources]


def _transform(
    resource: Resource, namespace: str | None, labels: dict[str, str], images: dict[str, Any]
) -> Resource:
    result = copy.deepcopy(resource)
    metadata = result.setdefault("metadata", {})
    if namespace and result["kind"] not in CLUSTER_SCOPED:
        metadata["namespace"] = namespace
    if labels:
        metadata["labels"] = {**metadata.get("labels", {}), **labels}
    for container in containers(result):
        container["image"] = _image(container["image"], images)
    return result


def _image(image: str, images: dict[str, Any]) -> str:
    name, _, tag = image.partition(":")
    override = images.get(name)
    if override is None:
        return image
    name = override.get("newName", name)
    tag = override.get("newTag", tag)
    return f"{name}:{tag}" if tag else name


def pod_spec(resource: Resource) -> dict[str, Any] | None:
    """The pod template's spec of a workload (Deployment, StatefulSet, Job), else None."""
    template = resource.get("spec", {}).get("template")
    return None if template is None else template.get("spec")


def containers(resource: Resource) -> list[dict[str, Any]]:
    """Init containers and containers of a workload."""
    spec = pod_spec(resource)
    if spec is None:
        return []
    return [*spec.get("initContainers", []), *spec.get("containers", [])]
