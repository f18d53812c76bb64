"""The deployment files under infra/, parsed once, and a validator for the kept KubeRay schema."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
KUBERAY_SCHEMA = INFRA / "schemas" / "kuberay-v1.6.yaml"
TRIMMED = "x-op4ksr-trimmed"

# (apiVersion, kind) -> the definition in KUBERAY_SCHEMA that validates it.
KUBERAY_KINDS = {("ray.io/v1", "RayJob"): "RayJob", ("ray.io/v1", "RayCronJob"): "RayCronJob"}

FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("int32")
def _int32(value) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@FORMATS.checks("int64")
def _int64(value) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


def load_yaml_docs(path: Path) -> list:
    """Every document of a (multi-document) YAML file, empty ones dropped."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _reject_unknown_fields(node) -> None:
    # The API server's strict field validation (kubectl's default) rejects unknown fields;
    # only nodes whose property list was cut when trimming may hold fields we did not keep.
    if isinstance(node, dict):
        if "properties" in node and not node.get(TRIMMED) and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _reject_unknown_fields(value)
    elif isinstance(node, list):
        for value in node:
            _reject_unknown_fields(value)


def kuberay_validator(kind: str) -> jsonschema.Draft7Validator:
    """A validator for one KubeRay kind ('RayJob', 'RayCronJob') from the kept CRD schema."""
    definitions = copy.deepcopy(yaml.safe_load(KUBERAY_SCHEMA.read_text())["definitions"])
    _reject_unknown_fields(definitions)
    schema = {**definitions[kind], "definitions": definitions}
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=FORMATS)


def _schema_errors(doc: dict) -> list[str]:
    """'path: message' for each way a KubeRay manifest breaks the kept schema."""
    kind = KUBERAY_KINDS.get((doc.get("apiVersion"), doc.get("kind")))
    if kind is None:
        return [f"no schema kept for apiVersion={doc.get('apiVersion')} kind={doc.get('kind')}"]
    errors = kuberay_validator(kind).iter_errors(doc)
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)


def _pinned_version(package: str) -> str:
    """The exact version pyproject.toml pins for a dependency (extras ignored)."""
    # A pattern, not tomllib: the project supports Python 3.10, which has no tomllib.
    text = (ROOT / "pyproject.toml").read_text()
    pin = re.search(rf'"{re.escape(package)}(\[[^\]]*\])?==([^"]+)"', text)
    assert pin, f"pyproject.toml pins no {package}"
    return pin.group(2).strip()


@pytest.fixture(scope="session")
def schema_errors():
    """f(manifest) -> 'path: message' per violation of the kept KubeRay schema (none: valid)."""
    return _schema_errors


@pytest.fixture(scope="session")
def pinned_version():
    """f(package) -> the exact version pyproject.toml pins."""
    return _pinned_version


@pytest.fixture(scope="session")
def k8s_docs() -> list[tuple[Path, dict]]:
    """(file, document) for every Kubernetes manifest under infra/k8s/."""
    docs = [(p, d) for p in sorted((INFRA / "k8s").rglob("*.y*ml")) for d in load_yaml_docs(p)]
    assert docs, "no manifests under infra/k8s/"
    return docs


def _one(k8s_docs, kind: str) -> dict:
    found = [doc for _, doc in k8s_docs if doc.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} under infra/k8s/, found {len(found)}"
    return found[0]


@pytest.fixture(scope="session")
def rayjob(k8s_docs) -> dict:
    return _one(k8s_docs, "RayJob")


@pytest.fixture(scope="session")
def raycronjob(k8s_docs) -> dict:
    return _one(k8s_docs, "RayCronJob")


@pytest.fixture(scope="session")
def cluster_launcher() -> dict:
    (doc,) = load_yaml_docs(INFRA / "ray" / "cluster-aws.yaml")
    return doc
