"""The one Ray session policy of every command that runs on Ray (backfill, compare, train), and the
filters on Ray's notices that op4ksr's own lines replace, installed once per process."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import warnings


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
        quiet_token_notice()
        # address="local": without it ray.init joins whatever cluster /tmp/ray/ray_current_cluster names
        # (anyone's `ray start` on this machine) and then refuses num_cpus
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()


# Each is installed once per process: a logging filter added per call piles up (compare runs one
# backfill per variant; the test suite hundreds).
@functools.cache
def quiet_token_notice() -> None:
    """Ray's token authentication stays on (its default for a new local cluster); only its notice
    that it is on is dropped, so a run prints op4ksr's own lines."""
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
        lambda record: not record.getMessage().startswith("Token authentication is enabled"))


@functools.cache
def quiet_ray_data() -> None:
    """Ray Data's notices that a run's own progress line and settings make noise."""
    # A run smaller than pipeline.fetch_tasks blocks gets fewer fetch tasks: expected, not a problem.
    warnings.filterwarnings("ignore", message="The maximum number of concurrent tasks", category=UserWarning)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # our progress line replaces Ray Data's bars: its notice that they are off says nothing to a user
    logging.getLogger("ray.data._internal.progress").addFilter(
        lambda record: not record.getMessage().startswith("Progress bars disabled"))
