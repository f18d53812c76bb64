"""Device time lost with dead actors is its own ledger stage, `device lost`, shared over the run's rows."""
import pytest

from pipeline.ledger.cost import actor_activity, build_ledger, format_cost
from tests.ledger_frames import cost_summary
from pipeline.ledger.finish import lost_work
from tests.pipeline.ledger.test_cost import PRICES, T0, _manifest


def test_work_held_by_dead_actors_is_device_lost_shared_over_the_rows_not_skipped():
    manifest = _manifest()  # node:1: 3 forwards (4 s), 8 s load + warm-up, from T0 - 100; node:2: 2 skipped rows
    # node:1 died at T0 - 20 holding 5 s of work; node:3 died loading, having delivered nothing (30 s);
    # node:2 was released by the autoscaler at T0 - 50, idle
    pool = {"died": {"node:1": {"started_at": T0 - 100, "ended_at": T0 - 20, "lost_seconds": 5.0},
                     "node:3": {"started_at": T0 - 40, "ended_at": T0 - 10, "lost_seconds": 1.0}},
            "ended": {"node:1": T0 - 20, "node:3": T0 - 10, "node:2": T0 - 50}}
    lost = lost_work(pool, actor_activity(manifest), attempted=4)
    assert lost.lost_by_actor == {"node:1": 5.0, "node:3": 30.0} and lost.per_row == pytest.approx(35 / 4)

    ledger = build_ledger(manifest, PRICES, run_ended_at=T0, lost=lost).set_index("key")
    assert ledger.loc["photos/a.png", "device_lost_seconds"] == pytest.approx(35 / 4)
    assert ledger.loc["broken.jpg", "device_lost_seconds"] == pytest.approx(35 / 4)  # a failed row shares it too
    assert ledger.loc["scans/d.png", "device_lost_seconds"] == 0  # skipped: nothing was attempted
    # node:1 is charged until it died, and the work it held is not its idle time: 80 - 8 - 4 - 5 = 63 s idle
    assert ledger.loc["photos/a.png", "device_idle_seconds"] == pytest.approx(63 / 3)
    # node:2 until it was released: 50 s, 8 of them load + warm-up, over its 2 rows
    assert ledger.loc["scans/d.png", "device_idle_seconds"] == pytest.approx(42 / 2)
    # every device second is somewhere: node:1's 80, node:2's 50, node:3's 30
    assert ledger["device_seconds"].sum() == pytest.approx(80 + 50 + 30)

    summary = cost_summary(ledger.reset_index(), PRICES)
    lost_stage = next(s for s in summary["stages"] if s["stage"] == "device lost")
    assert lost_stage["amount"] == pytest.approx(35.0) and summary["device_lost_seconds"] == pytest.approx(35.0)
    assert lost_stage["usd"] == pytest.approx(35 / 3600 * PRICES.gpu_hour_usd)
    table = format_cost(summary)  # what `op4ksr cost` and the run print
    assert "device lost" in table
    assert f"device lost with dead actors / nodes  35 s, {lost_stage['share']:.1%} of the USD" in table


def test_a_run_without_deaths_has_no_lost_work():
    lost = lost_work({}, None, attempted=0)
    assert (lost.per_row, lost.lost_by_actor, lost.ended) == (0.0, {}, {})
