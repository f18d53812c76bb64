"""actors.resources: Ray custom resources for the model actors, validated in the config and
asked of Ray by the actor pool (a resource no node offers keeps the pool from starting)."""
import pytest

from actors.upscaler import UpscaleActor
from jobs.config import ConfigError, load_config
from jobs.specs import pool_spec
from pipeline.run.backfill import run_backfill
from tests.pipeline.run.test_backfill import _catalog, _spec


@pytest.mark.parametrize("override,message", [
    ("actors.resources=1", r"actors.resources=1 must be a mapping of Ray resource name to amount"),
    ("actors.resources.model_slot=many", r"actors.resources.model_slot='many' must be a number of at least 0.0001"),
    ("actors.resources.model_slot=0", r"actors.resources.model_slot=0 must be a number"),
    ("actors.resources.GPU=1", r"actors.resources.GPU: GPU is not a custom resource; use actors.num_cpus"),
])
def test_a_bad_actor_resource_is_a_one_line_error(override, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_config([], [override])
    assert "\n" not in str(caught.value)


def test_actor_resources_reach_the_pool_spec():
    assert pool_spec(load_config()).resources == {}
    cfg = load_config([], ["actors.resources.model_slot=1", "actors.resources.fast_disk=0.5"])
    assert pool_spec(cfg).resources == {"model_slot": 1.0, "fast_disk": 0.5}


def test_an_actor_resource_no_node_offers_keeps_the_pool_from_starting(s3_server, s3_bucket, ray_local):
    from pipeline.run.dataflow import ActorStartTimeout

    _catalog(s3_server, s3_bucket, count=1)
    spec = _spec(s3_server, s3_bucket, "no-slot", "actors.resources.model_slot=1", "actors.start_timeout_s=2")
    with pytest.raises(ActorStartTimeout, match=r"0.5 CPU and model_slot 1 each did not start within"):
        run_backfill(spec, UpscaleActor)
