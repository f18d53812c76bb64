"""Session-wide fixtures: real local services (a moto S3 server over HTTP, a local Ray)."""

import uuid

import pytest

from pipeline.storage.embedded_s3 import EmbeddedS3


@pytest.fixture(scope="session")
def s3_server():
    """One moto S3 server on 127.0.0.1 for the whole session (an `EmbeddedS3`)."""
    with EmbeddedS3() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """The name of a fresh, empty bucket on `s3_server`."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_server.create_bucket(name)
    return name


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the session, with enough logical CPUs that the fetch tasks and the
    model actor (fractional num_cpus) can never wait on each other on a 2-core machine."""
    import ray

    # address="local": a Ray of its own, not one that another process started with `ray start` here
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module of small tensors: intra-op threads only add contention
    on a shared 2-core machine (gradcheck timed out with two)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
