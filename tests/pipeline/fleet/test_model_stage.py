"""The model stage's readers-writer lock on two and three real threads: shared calls run side by side,
an input alone waits for them to end and keeps new ones out until it is done."""
import threading
import time

from pipeline.fleet.model_stage import ReadersWriterLock

WAIT = 5.0  # s; a test that hangs fails instead


def _hold(context, entered: threading.Event, release: threading.Event, log: list, name: str):
    with context:
        log.append(f"{name} in")
        entered.set()
        assert release.wait(WAIT)
        log.append(f"{name} out")


def test_two_shared_calls_run_side_by_side():
    lock, log = ReadersWriterLock(), []
    entered = [threading.Event(), threading.Event()]
    release = threading.Event()
    threads = [threading.Thread(target=_hold, args=(lock.shared(), entered[i], release, log, f"s{i}")) for i in (0, 1)]
    for t in threads:
        t.start()
    assert all(e.wait(WAIT) for e in entered)  # both inside at once
    release.set()
    for t in threads:
        t.join(WAIT)
    assert sorted(log[:2]) == ["s0 in", "s1 in"]


def test_alone_waits_for_the_shared_call_and_keeps_a_new_one_out():
    lock, log = ReadersWriterLock(), []
    shared_in, shared_go = threading.Event(), threading.Event()
    alone_in, alone_go = threading.Event(), threading.Event()
    late_in, late_go = threading.Event(), threading.Event()
    first = threading.Thread(target=_hold, args=(lock.shared(), shared_in, shared_go, log, "shared"))
    first.start()
    assert shared_in.wait(WAIT)
    alone = threading.Thread(target=_hold, args=(lock.alone(), alone_in, alone_go, log, "alone"))
    alone.start()
    while not lock.alone_waiting:  # the input alone is waiting for its turn
        time.sleep(0.001)
    late = threading.Thread(target=_hold, args=(lock.shared(), late_in, late_go, log, "late"))
    late.start()
    assert not alone_in.wait(0.2) and not late_in.is_set()  # the shared call still runs: both wait
    shared_go.set()
    assert alone_in.wait(WAIT)
    assert not late_in.wait(0.2)  # a new shared call waits while the input runs alone
    alone_go.set()
    assert late_in.wait(WAIT)
    late_go.set()
    for t in (first, alone, late):
        t.join(WAIT)
    assert log == ["shared in", "shared out", "alone in", "alone out", "late in", "late out"]
