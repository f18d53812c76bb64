"""The filters on Ray's notices are installed once per process, however many runs it starts."""
import logging
import warnings

from jobs.config import load_config
from jobs.specs import pool_spec
from pipeline.fleet.ray_session import quiet_ray_data, quiet_token_notice
from pipeline.run.dataflow import configure_ray_data

LOGGERS = ("ray.data._internal.progress", "ray._private.authentication.authentication_token_setup")


def _filters() -> list[int]:
    return [len(logging.getLogger(name).filters) for name in LOGGERS] + [len(warnings.filters)]


def test_the_notice_filters_are_installed_once_per_process():
    pool = pool_spec(load_config())
    configure_ray_data(pool)
    quiet_token_notice()
    once = _filters()
    for _ in range(3):  # three variants of `op4ksr compare`, or three runs of the suite
        configure_ray_data(pool)
        quiet_ray_data()
        quiet_token_notice()
    assert _filters() == once
    progress = logging.getLogger(LOGGERS[0])
    assert not progress.filter(logging.LogRecord(LOGGERS[0], logging.INFO, "", 0, "Progress bars disabled", (), None))
    assert progress.filter(logging.LogRecord(LOGGERS[0], logging.INFO, "", 0, "something else", (), None))
