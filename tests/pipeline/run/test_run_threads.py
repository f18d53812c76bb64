"""A run that gives up leaves nothing behind (issue 27, item 7): its record pump, its pool watch and
its dataset executor are stopped and joined before it returns, so that Ray can be shut down and
started again in the same process. (A thread left polling Ray after `ray.shutdown()` makes Ray end
the whole process: the suite then died with no test failing.)"""
import threading

import pytest

from actors.upscaler import UpscaleActor
from jobs.config import load_config
from jobs.specs import build_run_spec
from pipeline.run.backfill import run_backfill
from pipeline.fleet.pool_watch import ActorStartTimeout
from tests.badinputs import write_noise_pngs

# Ray Data's process-wide helpers: started once per process on the first execution and kept for its
# life by design (they read Prometheus, not the Ray core worker), whichever run came first
PROCESS_WIDE = ("data-usage-metrics-poller",)


def _spec(tmp_path, run_id, *overrides):
    cfg = load_config(["local"], [f"input.uri={tmp_path / 'in'}", f"output.uri={tmp_path / 'out'}",
                                  "actors.torch_threads=1", *overrides])
    return build_run_spec(cfg, run_id, "")


def _threads_left(before: set) -> list[str]:
    return sorted(t.name for t in threading.enumerate()
                  if t.ident not in before and t.is_alive() and t.name not in PROCESS_WIDE)


class _Stop(Exception):
    pass


def _restart(ray):
    ray.shutdown()
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    assert ray.get(ray.put("alive")) == "alive"


@pytest.mark.slow
def test_a_run_that_gives_up_for_want_of_room_joins_every_thread_it_started(ray_local, tmp_path):
    write_noise_pngs(tmp_path / "in", 3)
    spec = _spec(tmp_path, "no-room", "actors.num_gpus=1", "actors.start_timeout_s=3")  # this Ray has no GPU
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(ActorStartTimeout):
        run_backfill(spec, UpscaleActor)
    assert _threads_left(before) == []
    _restart(ray_local)


@pytest.mark.slow
def test_a_run_whose_consumer_fails_mid_run_stops_its_executor_and_joins_every_thread(ray_local, tmp_path):
    write_noise_pngs(tmp_path / "in", 12)
    spec = _spec(tmp_path, "consumer-fails")

    def fail_on_first_row(progress):
        raise _Stop  # e.g. the manifest's store went away: the run ends with most inputs still in flight

    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(_Stop):
        run_backfill(spec, UpscaleActor, fail_on_first_row)
    assert _threads_left(before) == []
    _restart(ray_local)
