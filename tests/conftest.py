"""Session-wide fixtures: real local services (a moto S3 server over HTTP, a local Ray)."""

import os
import uuid

# A run that gives up waiting for room leaves Ray Data's consumer thread behind; once the test's Ray
# is shut down, that thread must fail, not silently start or join another Ray (Ray reads this at import)
os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")

import pytest  # noqa: E402

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


@pytest.fixture
def ray_local():
    """One local Ray, started on first use and kept for the session, with enough logical CPUs that
    the fetch tasks and the model actor (fractional num_cpus) can never wait on each other on a
    2-core machine. A `ray_cluster` test stops it (a driver joins one Ray at a time); the next
    test that asks for it starts it again."""
    import ray

    if not ray.is_initialized():
        # address="local": a new local Ray even when another cluster on this machine wrote its address
        # where a plain ray.init() would look (ray.cluster_utils does, other sessions' tests too)
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING")
    yield ray


@pytest.fixture
def ray_cluster(request):
    """A real multi-node Ray on this machine (`ray.cluster_utils.Cluster`: each node its own raylet):
    a head with 2 CPUs and no GPU, where the driver, the fetch tasks and the run's bookkeeping
    actor live, and `add_gpu_node()` adds a worker node with 1 CPU and 1 GPU, declared rather than
    detected, so that model actors asking for actors.num_gpus=1 land on worker nodes only (their
    torch still runs on the CPU). The session's local Ray is stopped first and this driver joins
    the cluster; `cluster.remove_node(node)` takes a node away as a spot reclaim would. Parametrized
    indirectly, its value updates the head node's arguments (e.g. a smaller object store)."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    head = {"num_cpus": 2, "num_gpus": 0, "include_dashboard": False, **getattr(request, "param", {})}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    # Cluster writes its address where a plain ray.init() on this machine would join it: take it back
    address_file = ray._private.utils.get_ray_address_file(None)
    if os.path.exists(address_file) and open(address_file).read() == cluster.address:
        os.remove(address_file)
    cluster.add_gpu_node = lambda: cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.connect()
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module of small tensors: intra-op threads only add contention
    on a shared 2-core machine (gradcheck timed out with two)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
