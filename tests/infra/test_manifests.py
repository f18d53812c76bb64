"""The KubeRay manifests: valid against the kept CRD schema, entrypoints that name configs which
load, GPU workers that match the config, and credentials only by reference to a Secret."""
from __future__ import annotations

import copy
import re
import shlex
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from jobs.config import CONFIG_DIR, load_config

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
YAML_FILES = sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml"))
# Where a deployment command may name a config: the manifests, the launcher, the guide.
COMMAND_FILES = sorted(p for p in INFRA.rglob("*") if p.is_file()) + [ROOT / "docs" / "DEPLOY.md"]
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def _ray_spec(doc: dict) -> dict:
    return doc["spec"]["jobTemplate"] if doc["kind"] == "RayCronJob" else doc["spec"]


def _pod_specs(doc: dict):
    cluster = _ray_spec(doc)["rayClusterSpec"]
    yield "head", cluster["headGroupSpec"]["template"]["spec"]
    for group in cluster.get("workerGroupSpecs", []):
        yield group["groupName"], group["template"]["spec"]


def _containers(doc: dict):
    for group, pod in _pod_specs(doc):
        for container in pod["containers"]:
            yield group, container


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_parses(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs), f"{path}: expected YAML mappings"


def test_manifests_match_the_kuberay_crd_schema(k8s_docs, schema_errors):
    for path, doc in k8s_docs:
        name = doc.get("metadata", {}).get("name", "")
        assert DNS_SUBDOMAIN.match(name), f"{path}: metadata.name {name!r} is not a DNS-1123 name"
        assert schema_errors(doc) == [], f"{path} ({doc.get('kind')} {name})"


_DELETE = object()
_WORKERS = "spec.rayClusterSpec.workerGroupSpecs.0"
_HEAD_AFFINITY = "spec.rayClusterSpec.headGroupSpec.template.spec.affinity.nodeAffinity"


def _set(doc: dict, path: str, value) -> dict:
    """A copy of doc with the dotted path set to value (or deleted, for _DELETE)."""
    broken = copy.deepcopy(doc)
    *parents, leaf = path.split(".")
    node = broken
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return broken


@pytest.mark.parametrize(("field", "value", "expected"), [
    (f"{_WORKERS}.minReplicas", "1", "minReplicas: '1' is not of type 'integer'"),
    (f"{_WORKERS}.maxReplicas", 2**31, "maxReplicas: 2147483648 is not a 'int32'"),
    ("spec.shutdownAfterJobFinish", True, "Additional properties are not allowed"),
    ("spec.rayClusterSpec.headGroupSpec", _DELETE, "'headGroupSpec' is a required property"),
    ("spec.rayClusterSpec.headGroupSpec.rayStartParams.num-cpus", 0,
     "num-cpus: 0 is not of type 'string'"),
    (f"{_WORKERS}.template.spec.containers.0.resources.limits.cpu", 0.5, "cpu: 0.5 is not valid"),
    ("spec.rayClusterSpec.autoscalerOptions.upscalingMode", "Fast", "'Fast' is not one of"),
    (f"{_HEAD_AFFINITY}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms", _DELETE,
     "'nodeSelectorTerms' is a required property"),
    (f"{_HEAD_AFFINITY}.requiredDuringScheduling", {}, "Additional properties are not allowed"),
], ids=["minReplicas-string", "maxReplicas-over-int32", "misspelt-field", "no-headGroupSpec",
        "rayStartParams-number", "cpu-float", "upscalingMode-not-in-enum", "no-nodeSelectorTerms",
        "misspelt-nodeAffinity-field"])
def test_a_broken_rayjob_fails_validation(rayjob, schema_errors, field, value, expected):
    errors = schema_errors(_set(rayjob, field, value))
    assert any(expected in e for e in errors), errors


def test_a_broken_raycronjob_fails_validation(raycronjob, schema_errors):
    assert any("'schedule' is a required property" in e
               for e in schema_errors(_set(raycronjob, "spec.schedule", _DELETE)))
    # The schema of a later KubeRay (rayJobTemplate: {spec: ...}) is not what v1.6 accepts.
    nested = _set(raycronjob, "spec.jobTemplate", {"spec": raycronjob["spec"]["jobTemplate"]})
    assert any("Additional properties are not allowed ('spec'" in e for e in schema_errors(nested))


def test_an_unknown_kind_is_not_waved_through(schema_errors):
    assert schema_errors({"apiVersion": "batch/v1", "kind": "CronJob"}) == [
        "no schema kept for apiVersion=batch/v1 kind=CronJob"]


# --- entrypoints and the configs they name ---------------------------------------------

def _backfill_commands() -> list[tuple[str, str]]:
    """(where, command) for every `op4ksr backfill ...` line in COMMAND_FILES."""
    found = []
    for path in COMMAND_FILES:
        if not path.is_file():
            continue
        lines = path.read_text().splitlines()
        in_code = path.suffix != ".md"  # in Markdown, only fenced code blocks hold commands
        for number, line in enumerate(lines, 1):
            if path.suffix == ".md" and line.lstrip().startswith("```"):
                in_code = not in_code
            start = line.find("op4ksr backfill")
            if start < 0 or not in_code:
                continue
            command, following = line[start:].rstrip(), iter(lines[number:])
            while command.endswith("\\"):  # shell continuation lines
                command = command[:-1] + " " + next(following, "").lstrip("# ").rstrip()
            found.append((f"{path.relative_to(ROOT)}:{number}", command.rstrip("`\"' ")))
    return found


def _parse_backfill(command: str) -> tuple[list[str], list[str], str | None]:
    """(config files, key=value overrides, --since value) of one backfill command line."""
    words = []
    for word in shlex.split(command, comments=True)[2:]:
        words += word.split("=", 1) if word.startswith("--") and "=" in word else [word]
    options, overrides = {"--config": [], "--since": [], "--limit": []}, []
    following = iter(words)
    for word in following:
        if word in options:
            options[word].append(next(following))
        elif "=" in word:
            overrides.append(word)
        elif word != "--dry-run":
            raise AssertionError(f"unexpected word {word!r} in {command!r}")
    return options["--config"], overrides, (options["--since"] or [None])[-1]


def _config_file(name: str) -> Path:
    # As jobs.config.resolve_path does, with the working directory at the repository root
    # (the image's WORKDIR, where Ray job drivers run).
    for candidate in (ROOT / name, CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    raise AssertionError(f"config '{name}' does not exist under {ROOT} or {CONFIG_DIR}")


BACKFILL_COMMANDS = _backfill_commands()


def test_backfill_commands_are_found():
    where = {w.split(":")[0] for w, _ in BACKFILL_COMMANDS}
    assert {"infra/k8s/rayjob-backfill.yaml", "infra/k8s/raycronjob-nightly.yaml"} <= where


@pytest.mark.parametrize(("where", "command"), BACKFILL_COMMANDS,
                         ids=[where for where, _ in BACKFILL_COMMANDS])
def test_backfill_commands_name_configs_that_load(where, command):
    configs, overrides, since = _parse_backfill(command)
    assert configs, f"{where}: no --config in {command!r}"
    files = [_config_file(name) for name in configs]
    assert all(f.parent == CONFIG_DIR for f in files), f"{where}: configs must live in configs/"
    load_config([str(f) for f in files], overrides)
    if since is not None and since != "last":
        datetime.fromisoformat(since)


def test_entrypoints_parse_with_the_backfill_cli(rayjob, raycronjob):
    from jobs.backfill import build_parser

    for doc in (rayjob, raycronjob):
        args = build_parser().parse_args(shlex.split(_ray_spec(doc)["entrypoint"])[2:])
        assert args.since == ("last" if doc is raycronjob else None)


def test_nightly_is_the_one_off_job_plus_since_last(rayjob, raycronjob):
    nightly = copy.deepcopy(raycronjob["spec"]["jobTemplate"])
    assert nightly.pop("entrypoint") == rayjob["spec"]["entrypoint"] + " --since last"
    one_off = {k: v for k, v in rayjob["spec"].items() if k != "entrypoint"}
    assert nightly == one_off, "raycronjob-nightly.yaml's jobTemplate drifted from the RayJob"


def test_the_cluster_goes_away_after_the_job(rayjob):
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True
    assert rayjob["spec"]["ttlSecondsAfterFinished"] > 0


# --- the Ray cluster the job asks for ----------------------------------------------------

def test_ray_version_is_the_pinned_one(rayjob, pinned_version):
    assert rayjob["spec"]["rayClusterSpec"]["rayVersion"] == pinned_version("ray")


def test_gpu_workers_autoscale_on_gpu_nodes_as_the_config_expects(rayjob):
    cluster = rayjob["spec"]["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    configs, overrides, _ = _parse_backfill(rayjob["spec"]["entrypoint"])
    cfg = load_config([str(_config_file(name)) for name in configs], overrides)
    assert cfg.actors.num_gpus >= 1
    gpus_at_most = 0
    for group in cluster["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
        pod = group["template"]["spec"]
        assert pod["nodeSelector"], "GPU workers need a nodeSelector for GPU nodes"
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        (container,) = pod["containers"]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        gpus = int(limits["nvidia.com/gpu"])
        assert gpus >= 1 and requests.get("nvidia.com/gpu") == limits["nvidia.com/gpu"]
        assert _cpus(limits["cpu"]) >= cfg.actors.num_cpus, "an actor's CPUs must fit in its pod"
        gpus_at_most += group["maxReplicas"] * gpus
    # the pool may hold as many actors as every GPU group at its largest, and no more
    assert cfg.actors.max == gpus_at_most // cfg.actors.num_gpus


def _cpus(quantity) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_head_runs_no_work(rayjob):
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert not any("nvidia.com/gpu" in c["resources"].get("limits", {})
                   for c in head["template"]["spec"]["containers"])


def test_images_are_pinned_and_the_same_everywhere(k8s_docs, cluster_launcher):
    images = {c["image"] for _, doc in k8s_docs for _, c in _containers(doc)}
    images |= {c["image"] for _, doc in k8s_docs
               for c in _ray_spec(doc).get("submitterPodTemplate", {}).get("spec", {}).get("containers", [])}
    images.add(cluster_launcher["docker"]["image"])
    assert len(images) == 1, f"one image for head, workers and launcher, got {images}"
    (image,) = images
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    assert "@sha256:" in image or (tag and tag != "latest"), f"{image} is not pinned"


def test_telemetry_goes_to_the_collector(k8s_docs):
    collector = yaml.safe_load((INFRA / "otel" / "collector.yaml").read_text())
    grpc_port = collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].rsplit(":", 1)[1]
    for path, doc in k8s_docs:
        for group, container in _containers(doc):
            env = {e["name"]: e for e in container.get("env", [])}
            endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", {}).get("value", "")
            assert endpoint.endswith(f":{grpc_port}"), f"{path} {group}: OTLP endpoint {endpoint!r}"


# --- credentials --------------------------------------------------------------------------

SECRET_ENV = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|KEY_ID|CREDENTIAL", re.IGNORECASE)
SECRET_TEXT = [
    re.compile(r"(?<![A-Z0-9])(AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"),  # AWS access key id
    re.compile(r"(?i)secret[-_a-z]*['\"]?\s*[:=]\s*['\"]?[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"),
]


def test_credentials_come_from_a_secret_by_reference(k8s_docs):
    for path, doc in k8s_docs:
        assert doc["kind"] != "Secret", f"{path}: Secrets are created by hand (docs/DEPLOY.md)"
        for group, container in _containers(doc):
            for var in container.get("env", []):
                if SECRET_ENV.search(var["name"]):
                    assert "value" not in var, f"{path} {group}: {var['name']} is inlined"
                    assert "secretKeyRef" in var.get("valueFrom", {}), f"{path}: {var['name']}"


@pytest.mark.parametrize("path", COMMAND_FILES + [CONFIG_DIR / "flux-dev-4k.yaml"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_secret_values_in_deployment_files(path):
    if not path.is_file():
        pytest.skip(f"{path.relative_to(ROOT)} does not exist")
    text = path.read_text()
    for pattern in SECRET_TEXT:
        assert not pattern.search(text), f"{path}: looks like a credential: {pattern.pattern}"
