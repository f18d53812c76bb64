"""Setting up a run from config: the embedded S3 server when asked for, the run id, the RunSpec."""
from __future__ import annotations

import contextlib
from typing import Iterator

from omegaconf import OmegaConf

from jobs.config import to_yaml
from jobs.specs import build_run_spec
from pipeline.run.backfill import new_run_id
from pipeline.run.spec import RunSpec


def _bucket(uri: str) -> str | None:
    return uri[len("s3://"):].split("/", 1)[0] if uri.startswith("s3://") else None


@contextlib.contextmanager
def run_session(cfg) -> Iterator[tuple[RunSpec, object | None]]:
    """(RunSpec, embedded server or None); with storage.embedded a moto S3 server runs on 127.0.0.1 meanwhile."""
    # the saved config is the resolved one, as the user would write it (to_yaml)
    run_id = cfg.run.id or new_run_id()
    if not cfg.storage.embedded:
        yield build_run_spec(cfg, run_id, to_yaml(cfg)), None
        return
    from pipeline.storage.embedded_s3 import EmbeddedS3

    with EmbeddedS3() as server:
        cfg = OmegaConf.merge(cfg, {"storage": {"endpoint_url": server.endpoint_url}})
        for bucket in {b for b in (_bucket(cfg.input.uri), _bucket(cfg.output.uri)) if b}:
            server.create_bucket(bucket)
        yield build_run_spec(cfg, run_id, to_yaml(cfg), credentials=server.credentials), server
