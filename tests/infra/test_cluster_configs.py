"""The Ray cluster launcher file (checked with the schema the pinned Ray ships) and the
OpenTelemetry collector config."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from jobs.config import CONFIG_DIR, load_config

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"


def _ray_launcher_schema() -> dict:
    # Located without importing ray (slow): ray/autoscaler/ray-schema.json is what `ray up` uses.
    (package_dir,) = importlib.util.find_spec("ray").submodule_search_locations
    return json.loads((Path(package_dir) / "autoscaler" / "ray-schema.json").read_text())


def test_launcher_config_matches_rays_own_schema(cluster_launcher):
    jsonschema.validate(cluster_launcher, _ray_launcher_schema())


def test_a_broken_launcher_config_fails(cluster_launcher):
    broken = {**cluster_launcher, "available_node_types": {
        **cluster_launcher["available_node_types"],
        "gpu": {**cluster_launcher["available_node_types"]["gpu"], "max_worker": 8}}}
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        jsonschema.validate(broken, _ray_launcher_schema())


def test_launcher_gpu_workers_match_the_config(cluster_launcher):
    types = cluster_launcher["available_node_types"]
    assert cluster_launcher["head_node_type"] in types
    assert types[cluster_launcher["head_node_type"]]["resources"].get("CPU") == 0
    workers = {name: t for name, t in types.items() if name != cluster_launcher["head_node_type"]}
    assert sum(t["max_workers"] for t in workers.values()) <= cluster_launcher["max_workers"]
    gpu = types["gpu"]
    assert gpu["min_workers"] <= gpu["max_workers"]
    cfg = load_config([str(CONFIG_DIR / "flux-dev-4k.yaml")])
    assert gpu["max_workers"] * gpu["resources"]["GPU"] // cfg.actors.num_gpus == cfg.actors.max


def test_launcher_can_start_the_image(cluster_launcher):
    # The launcher runs `docker run ... IMAGE bash`; with the image's ENTRYPOINT that would be
    # `op4ksr bash`, so the entrypoint must be reset.
    assert "--entrypoint=" in cluster_launcher["docker"]["run_options"]
    mounts = [o for o in cluster_launcher["docker"]["run_options"] if o.startswith("-v ")]
    model_path = load_config([str(CONFIG_DIR / "flux-dev-4k.yaml")]).model.path
    assert any(model_path.startswith(m.split(":")[1]) for m in mounts), "model.path is not mounted"
    assert cluster_launcher["setup_commands"], "setup_commands install the project"


@pytest.fixture(scope="module")
def collector() -> dict:
    return yaml.safe_load((INFRA / "otel" / "collector.yaml").read_text())


def test_collector_receives_otlp_over_grpc_and_http(collector):
    assert set(collector["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}


def test_collector_pipelines_use_only_defined_components(collector):
    pipelines = collector["service"]["pipelines"]
    assert {"traces", "metrics"} <= set(pipelines)
    for name, pipeline in pipelines.items():
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline.get(section, []):
                assert component in collector[section], f"{name}: {section} {component} undefined"
        assert "debug" in pipeline["exporters"], f"{name}: keep `debug` to see data arrive"
    for extension in collector["service"].get("extensions", []):
        assert extension in collector["extensions"]
