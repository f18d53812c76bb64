"""`op4ksr video --ray` holds the backfill's run lock on its output: a second run on the same output is
refused in one line naming the first; a dry run takes no lock; a run that fails releases its own."""
import os
import socket

import pytest

from jobs.cli import main as cli
from pipeline.run import film_run
from pipeline.run.film_run import run_film
from pipeline.run.incremental import LOCK_KEY, RunLock, RunLockedError
from pipeline.storage import open_storage
from tests.pipeline.run.test_film_run import _frames, _spec, _write


@pytest.fixture
def stores(tmp_path):
    inp, out = str(tmp_path / "in"), str(tmp_path / "out")
    _write(open_storage(inp), _frames(count=3, cut=3))
    return inp, open_storage(out), out


def test_a_second_video_run_on_one_output_is_refused_in_one_line(stores, capsys):
    inp, out, out_uri = stores
    with RunLock.acquire(out, "first", 60, heartbeat=False):  # as `op4ksr video --ray` run "first" holds it
        with pytest.raises(RunLockedError, match=rf"held by run first on host {socket.gethostname()} "
                                                 rf"\(pid {os.getpid()}\)"):
            run_film(_spec(inp, out_uri, "second"), object)
        assert cli(["video", inp, "--out", out_uri, "--ray", "--scale", "2", "run.id=third"]) == 2
        err = capsys.readouterr().err  # beside the provenance note every run logs (no signing identity)
        refusal = [line for line in err.splitlines() if line.startswith("op4ksr video: ")]
        assert len(refusal) == 1 and "held by run first" in refusal[0] and "Traceback" not in err
        assert not out.exists("runs/second/config.yaml") and not out.exists("runs/third/config.yaml")
        # a dry run writes no output frames: it plans beside a running run
        assert run_film(_spec(inp, out_uri, "planning", "run.dry_run=true"), object)["due"] == 3
    assert not out.exists(LOCK_KEY)


def test_a_video_run_that_fails_releases_its_lock(stores, monkeypatch):
    inp, out, out_uri = stores

    def crash(*args, **kwargs):
        assert out.exists(LOCK_KEY)  # held while the run runs
        raise RuntimeError("the cluster went away")

    monkeypatch.setattr(film_run, "_run", crash)
    with pytest.raises(RuntimeError, match="went away"):
        run_film(_spec(inp, out_uri, "crashing"), object)
    assert not out.exists(LOCK_KEY)
    RunLock.acquire(out, "next", 60, heartbeat=False).release()  # the lock was released, not left to expire
