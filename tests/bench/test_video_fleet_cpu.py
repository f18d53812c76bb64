"""bench/video_fleet.py end to end at tiny sizes: the JSON the docs' figures come from.

Two subprocess runs (module fixtures): speed over a 4-frame 32x24 sequence with every row (the
--ray ones on a local Ray the script starts itself), memory over 20- and 40-frame sequences without
the whole --ray run (--ray-frames 0: the speed run already shows the --ray path end to end, and
each Ray start costs the suite ~30 s). No assertion is on time: the rows must exist, have run every frame to the
planned size, and agree on the cut.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "video_fleet.py"
FRAMES = 4

pytestmark = pytest.mark.slow


def _bench(*args: str) -> dict:
    done = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def speed() -> dict:
    return _bench("speed", "--frames", str(FRAMES), "--size", "24x32", "--long-side", "64")


@pytest.fixture(scope="module")
def memory() -> dict:
    return _bench("memory", "--frames", "20,40", "--ray-frames", "0")


def test_every_speed_row_ran_every_frame_to_the_planned_size(speed):
    run = speed["speed"]
    assert run["output"] == "64x48" and run["model"] == "tiny"
    assert list(run["rows"]) == ["bare", "local", "local-flow", "local-fusion", "ray"]
    for name, row in run["rows"].items():
        assert row["output"] == "64x48", name
        # the ray row's time is a difference of two runs (its fixed cost subtracted): at 4 tiny frames it is
        # noise and can be negative; the others are measured directly
        assert name == "ray" or (row["fps"] > 0 and row["wall_ms_per_frame"] > 0)
        assert row["overhead_ms_per_frame"] == row["wall_ms_per_frame"] - run["rows"]["bare"]["wall_ms_per_frame"]
        if name != "ray":  # the ray row's work is in other processes: no CPU figure
            assert row["cpu_overhead_ms_per_frame"] == row["cpu_ms_per_frame"] - run["rows"]["bare"]["cpu_ms_per_frame"]
    # the local path found the cut written half-way (frame numbers start at 1), with and without flow
    for report in run["reports"].values():
        assert report == {"cuts": [FRAMES // 2 + 1], "shots": 2}
    ray = run["rows"]["ray"]
    assert ray["summary"]["frames"] == ray["summary"]["done"] == FRAMES and ray["summary"]["failed"] == 0
    assert ray["summary"]["chunks"] == 2  # one per shot: no chunk crosses the cut
    assert ray["per_run_wall_s"] == pytest.approx(ray["wall_s"] - ray["fixed_wall_s"], abs=0.011)
    assert ray["driver_peak_rss_mb"] > 0


def test_speed_json_names_the_machine_and_versions(speed):
    versions = speed["versions"]
    for key in ("python", "torch", "ray", "av", "opencv", "machine", "cpus", "load_avg"):
        assert key in versions
    assert "speed" in speed["command"]


def test_memory_rows_cover_each_length_on_both_paths(memory):
    rows = memory["memory"]["rows"]
    assert [r["frames"] for r in rows] == [20, 40]
    for row in rows:
        assert row["local"]["frames_reported"] == row["frames"]
        assert row["local"]["peak_rss_mb"] > 0 and row["local"]["ru_maxrss_mb"] > 0
        assert row["ray_plan"]["peak_rss_mb"] > 0 and row["ray_plan"]["rss_mb_samples"] > 0
    assert memory["memory"]["ray_run"] is None  # not asked for
