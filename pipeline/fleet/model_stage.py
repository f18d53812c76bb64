"""The model stage as Ray Data runs it: the model actor class, watched and with its attempts bounded.

`WatchedStage(stage_cls=, model=, options=, roll=, book=, max_attempts=)` builds `stage_cls(model, options)` (the
model actor: actors.upscaler.UpscaleActor in every job) in a process that beats to the run's
ActorRoll (pipeline/fleet/pool_watch.py) and asks the AttemptBook (pipeline/fleet/attempts.py)
before each batch whether it runs whole or one input at a time. An input tried alone holds the
process to itself (no other call runs beside it), so a death then names that input.
"""
from __future__ import annotations

import contextlib
import threading
import time
import weakref

import pyarrow as pa
import ray

from pipeline.fleet.attempts import Action, give_up
from pipeline.fleet.pool_watch import BEAT_SECONDS, resident_bytes, worker_id
from pipeline.manifest.records import manifest_table


class WatchedStage:
    """`__call__(table of fetched records) -> table of manifest records`, as `stage_cls` does."""

    def __init__(self, *, stage_cls, model, options, roll, book, max_attempts: int) -> None:
        self.roll, self.book, self.max_attempts = roll, book, max_attempts
        self.worker, self.started_at = worker_id(), time.time()
        context = ray.get_runtime_context()
        self.ray_actor_id, self.node_id = context.get_actor_id() or "", context.get_node_id()
        self.calls: dict[int, float] = {}  # call number -> when it began (up to two calls at once)
        self.lock, self.count = threading.Lock(), 0
        self.isolation = ReadersWriterLock()
        # beats start before the model loads: a loading actor holds its device, so it counts as live. The
        # thread holds the stage weakly, so that Ray Data's release of the actor (which drops the UDF: __del__)
        # stops and joins it
        self._stop_beats = threading.Event()
        self._beats = threading.Thread(target=_beat_until_stopped, args=(weakref.ref(self), self._stop_beats),
                                       name="roll-beat", daemon=True)
        self._beats.start()
        self.stage = stage_cls(model=model, options=options)

    def __del__(self) -> None:
        stop, beats = getattr(self, "_stop_beats", None), getattr(self, "_beats", None)
        if stop is not None:
            stop.set()
        if beats is not None and beats is not threading.current_thread():
            beats.join(timeout=2 * BEAT_SECONDS)

    def __call__(self, batch: pa.Table) -> pa.Table:
        with self.lock:
            self.count += 1
            number = self.count
            self.calls[number] = time.time()
        # busy now, and known to the roll before the forward: a batch that kills its process at once still counts
        ray.get(self._beat())
        try:
            keys = batch.column("key").to_pylist()
            with self.isolation.shared():  # counted once it may run: not while an input alone may kill the process
                whole = ray.get(self.book.begin.remote(keys))
                if whole:
                    out = self.stage(_with_attempts(batch, [1] * batch.num_rows))
            if not whole:
                out = self._one_at_a_time(batch)
            ray.get(self.book.end.remote(keys))
            return out
        finally:
            with self.lock:
                del self.calls[number]

    def _one_at_a_time(self, batch: pa.Table) -> pa.Table:
        """A batch whose process died before: each input alone, counted; spent ones given up."""
        records = []
        for i in range(batch.num_rows):
            row = batch.slice(i, 1)
            record = row.to_pylist()[0]
            if record["status"] is not None:  # failed or skipped in the fetch stage: no model, no attempt
                records += self.stage(row).to_pylist()
                continue
            # the attempt is counted, run and its record kept while the process is this input's alone: an
            # input waiting for its turn while another kills the process has not been tried, and one done
            # is on the book before the next may kill it
            with self.isolation.alone():
                verdict = ray.get(self.book.begin_alone.remote(record["key"]))
                if verdict.action is Action.DONE:
                    records.append(verdict.record)
                elif verdict.action is Action.GIVE_UP:
                    record.pop("payload", None)
                    records.append(give_up(record, verdict.attempts, verdict.alone, self.max_attempts))
                else:
                    done = self.stage(_with_attempts(row, [verdict.attempts])).to_pylist()[0]
                    ray.get(self.book.finish_alone.remote(record["key"], done))
                    records.append(done)
        return manifest_table(records)

    def _beat(self):
        with self.lock:
            busy_since = min(self.calls.values()) if self.calls else None
        return self.roll.beat.remote(self.worker, self.ray_actor_id, self.node_id, self.started_at, busy_since,
                                     resident_bytes())



def _beat_until_stopped(stage_ref, stop: threading.Event) -> None:
    """The roll beat of a WatchedStage, once a second, until it is stopped or released."""
    while not stop.is_set():
        stage = stage_ref()
        if stage is None:
            return
        stage._beat()
        del stage  # held only while beating
        stop.wait(BEAT_SECONDS)


def _with_attempts(batch: pa.Table, attempts: list[int]) -> pa.Table:
    """`batch` with its rows' `attempts` (for the rows the model will run: status still empty)."""
    todo = batch.column("status").is_null().to_pylist()
    values = pa.array([n if t else None for n, t in zip(attempts, todo)], pa.int32())
    return batch.set_column(batch.schema.get_field_index("attempts"), "attempts", values)


class ReadersWriterLock:
    """A readers-writer lock that prefers its writer: `shared()` holders (the calls running a first
    attempt) run side by side; `alone()` (an input tried alone) waits until no shared holder is
    left, runs with the process to itself, and from the moment it waits keeps new shared holders out.

    It exists because the pool runs up to two calls on one actor at once
    (max_concurrent_calls_per_actor=2 in pipeline/run/dataflow.py, so that one batch's forward
    overlaps the previous batch's encode + upload: actors/upscaler.py), while a death while an input
    runs alone must name that input, and an input waiting for its turn must not be charged an
    attempt it never had.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.sharing = self.alone_waiting = 0
        self.alone_running = False

    @contextlib.contextmanager
    def shared(self):
        with self.cond:
            self.cond.wait_for(lambda: not self.alone_running and not self.alone_waiting)
            self.sharing += 1
        try:
            yield
        finally:
            with self.cond:
                self.sharing -= 1
                self.cond.notify_all()

    @contextlib.contextmanager
    def alone(self):
        with self.cond:
            self.alone_waiting += 1
            self.cond.wait_for(lambda: not self.alone_running and not self.sharing)
            self.alone_waiting -= 1
            self.alone_running = True
        try:
            yield
        finally:
            with self.cond:
                self.alone_running = False
                self.cond.notify_all()
