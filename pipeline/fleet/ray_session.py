"""The one Ray session policy of every command that runs on Ray (backfill, compare, train)."""
from __future__ import annotations

import contextlib
import logging
import os


@contextlib.contextmanager
def ray_session(num_cpus: float | None):
    """Use the Ray already connected (a cluster, a test fixture), else join the cluster RAY_ADDRESS
    names (a Ray job's driver: `ray job submit`, KubeRay), else start a local one for this run."""
    import ray

    if ray.is_initialized():
        yield
        return
    if os.environ.get("RAY_ADDRESS"):
        # Ray refuses num_cpus when joining a cluster: the cluster's own resources apply.
        ray.init(log_to_driver=False, logging_level="WARNING")
    else:
        # Ray's token authentication stays on (its default for a new local cluster); only its notice
        # that it is on is dropped, so a run prints op4ksr's own lines
        logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
            lambda record: not record.getMessage().startswith("Token authentication is enabled"))
        # address="local": without it ray.init joins whatever cluster /tmp/ray/ray_current_cluster names
        # (anyone's `ray start` on this machine) and then refuses num_cpus
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()
