"""What the model actor pool did while a run lasted: live actors, restarts, lost nodes, lost work.

Each model actor process beats to a small `ActorRoll` actor on the driver's node once a second,
saying since when it has been busy (a call in flight) or that it is idle. The driver's
`PoolWatch` reads the roll and Ray's node table once a second, so that, measured rather than
configured:
- the live actor count is sampled (its peak and mean go to the summary and the report page);
- an actor that stops beating has ended (released by Ray Data's autoscaler, or dead); if it was
  busy, the device seconds of the calls it held are lost work (the ledger's `device lost` stage);
- a Ray actor id seen with a second process is an actor restart; a node that was alive and is
  not any more is a lost node (a spot reclaim);
- when fewer than actors.min actors are alive (a node lost and no room to restart its actors)
  and no image comes back, the run waits up to actors.start_timeout_s, naming the resources it
  waits for, and then fails with ActorStartTimeout.
Nothing here decides what to retry: that is the AttemptBook's count (pipeline/fleet/attempts.py).
"""
from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import ray

from op4ksr.errors import UserError
from pipeline.fleet.spec import PoolSpec

BEAT_SECONDS = 1.0
GONE_AFTER_SECONDS = 3.5  # no beat for this long: the process has ended
PUMP_STOP_SECONDS = 120.0  # how long a run's end waits for its record pump (the executor's shutdown ends it in ~2 s)
logger = logging.getLogger(__name__)


class ActorStartTimeout(UserError):
    """The actor pool's minimum did not start in time, or the cluster lost its room for any actor."""


def resident_bytes() -> int:
    """This process's resident memory (RSS) in bytes; 0 where /proc is not there."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def worker_id() -> str:
    """This process's id in manifest rows (`actor_id`) and in the roll: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class ActorRoll:
    """The beats of the run's model actor processes (a Ray actor on the driver's node)."""

    def __init__(self) -> None:
        self.workers: dict[str, dict] = {}

    def beat(self, worker: str, ray_actor_id: str, node_id: str, started_at: float, busy_since: float | None,
             rss_bytes: int = 0) -> None:
        entry = self.workers.setdefault(worker, {"ray_actor_id": ray_actor_id, "node_id": node_id,
                                                 "started_at": started_at, "rss_peak_bytes": 0})
        entry.update(last_beat=time.time(), busy_since=busy_since, rss_bytes=rss_bytes,
                     rss_peak_bytes=max(entry["rss_peak_bytes"], rss_bytes))

    def snapshot(self) -> dict[str, dict]:
        return self.workers


def on_driver_node(cls, *args) -> ray.actor.ActorHandle:
    """A small actor of `cls` pinned to this (the driver's) node: a lost worker node must not take it along."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(cls).options(num_cpus=0, scheduling_strategy=here).remote(*args)


@dataclass
class PoolReport:
    """The pool's story for summary.json, finish.json and the ledger."""

    actors_peak: int = 0
    actors_mean: float = 0.0
    actor_restarts: int = 0
    lost_nodes: int = 0
    # worker id -> {"started_at", "ended_at", "lost_seconds"} for processes that ended while busy
    died: dict[str, dict] = field(default_factory=dict)
    # worker id -> unix s it stopped beating, for processes that ended before the run did
    ended: dict[str, float] = field(default_factory=dict)
    # the most resident memory (RSS) one actor process had at a beat: the model's host memory
    # (model.offload=blocks on a CPU streams the blocks, so it stays near two blocks + activations)
    actors_rss_peak_bytes: int = 0


class PoolWatch:
    """Samples the roll and the nodes on a thread while the run's records are consumed (`records`)."""

    def __init__(self, roll, pool: PoolSpec, every_seconds: float = 1.0):
        self.roll, self.pool, self.every = roll, pool, every_seconds
        self.samples: list[int] = []
        self.workers: dict[str, dict] = {}
        self.nodes_seen: set[str] = set()
        self.nodes_lost: dict[str, float] = {}  # node id -> when it was first seen gone
        self.short_since: float | None = None  # since when fewer than actors.min actors are alive
        self.pool_up = False  # an actor has beaten: the pool started (before it, Ray Data's own start wait applies)
        self.last_row_at = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PoolWatch:
        self._thread = threading.Thread(target=self._run, name="pool-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()  # the last beats: who ended before the run did

    def records(self, source: Iterator[list[dict]], stop_source: Callable[[], None] = lambda: None
                ) -> Iterator[list[dict]]:
        """`source`'s items, consumed on a thread so that the run can give up waiting for room.

        However the consumer ends (all read, ActorStartTimeout, an error of its own, a generator
        closed early), the pump thread is stopped and joined before this returns: `stop_source` is
        called to end a pump blocked waiting for the next item (the run's dataset executor is shut
        down: pipeline/run/dataflow.py), the queue is drained so that a pump blocked on a full queue
        sees the stop, and the pump closes `source` itself (a generator is closed by its own thread).
        Nothing of the run then touches Ray after the run returns (issue 27: a thread polling Ray
        after its shutdown makes Ray end the whole process)."""
        items: queue.Queue = queue.Queue(maxsize=4)
        done, stop = object(), threading.Event()

        def hand_over(item) -> bool:
            while not stop.is_set():
                try:
                    items.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def pump() -> None:
            try:
                for item in source:
                    if not hand_over(item):
                        return
                hand_over(done)
            except BaseException as err:  # noqa: BLE001 - handed to the consumer
                hand_over(err)
            finally:
                close = getattr(source, "close", None)
                if close is not None:
                    close()

        thread = threading.Thread(target=pump, name="records", daemon=True)
        thread.start()
        try:
            while True:
                try:
                    item = items.get(timeout=self.every)
                except queue.Empty:
                    self._check_room()
                    continue
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                self.last_row_at = time.time()
                yield item
        finally:
            stop.set()
            if thread.is_alive():
                stop_source()
            deadline = time.monotonic() + PUMP_STOP_SECONDS
            while thread.is_alive() and time.monotonic() < deadline:
                with contextlib.suppress(queue.Empty):
                    items.get(timeout=0.1)
            if thread.is_alive():  # never seen; said rather than waited on for ever
                logger.warning("the run's record pump did not stop within %g s", PUMP_STOP_SECONDS)

    def sample(self) -> None:
        """One reading of the roll and of the nodes."""
        now = time.time()
        for node in ray.nodes():
            node_id = node["NodeID"]
            if node["Alive"]:
                self.nodes_seen.add(node_id)
            elif node_id in self.nodes_seen and node_id not in self.nodes_lost:
                self.nodes_lost[node_id] = now
                logger.warning("node %s left the cluster; the work its actors held is redone", node_id[:12])
        for worker, beat in ray.get(self.roll.snapshot.remote(), timeout=30).items():
            self.workers[worker] = beat
        live = sum(self._alive(beat, now) for beat in self.workers.values())
        self.samples.append(live)
        self.pool_up |= live > 0
        short = self.pool_up and live < self.pool.min_actors
        if short and self.short_since is None:
            self.short_since = now
            logger.warning("%d of actors.min=%d model actors alive: waiting up to actors.start_timeout_s=%g s for "
                           "room for the others (%s)", live, self.pool.min_actors, self.pool.start_timeout_s,
                           self.pool.resources_text())
        elif not short:
            self.short_since = None

    def report(self) -> PoolReport:
        now = time.time()
        per_actor: dict[str, int] = {}
        died, ended = {}, {}
        for worker, beat in self.workers.items():
            per_actor[beat["ray_actor_id"]] = per_actor.get(beat["ray_actor_id"], 0) + 1
            if self._alive(beat, now):
                continue
            ended[worker] = min(beat["last_beat"], self.nodes_lost.get(beat["node_id"], now))
            if beat["busy_since"] is not None:  # it ended holding work: killed, or its node lost
                died[worker] = {"started_at": beat["started_at"], "ended_at": ended[worker],
                                "lost_seconds": max(0.0, ended[worker] - beat["busy_since"])}
        # the pool's size from its first actor's start to the end (before it, the run was still listing)
        started = next((i for i, n in enumerate(self.samples) if n), len(self.samples))
        live = self.samples[started:] or [0]
        rss = max((beat.get("rss_peak_bytes", 0) for beat in self.workers.values()), default=0)
        return PoolReport(actors_peak=max(live), actors_mean=sum(live) / len(live), actors_rss_peak_bytes=rss,
                          actor_restarts=sum(n - 1 for actor, n in per_actor.items() if actor),
                          lost_nodes=len(self.nodes_lost), died=died, ended=ended)

    def _alive(self, beat: dict, now: float) -> bool:
        # a process on a lost node can linger and beat for a while: its node decides
        return now - beat["last_beat"] < GONE_AFTER_SECONDS and beat["node_id"] not in self.nodes_lost

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a missed reading costs one sample, never the run
                logger.debug("pool sample failed", exc_info=True)

    def _check_room(self) -> None:
        """Give up when the pool has been short of actors.min, with no row back, for actors.start_timeout_s
        (Ray would wait for ever for room to restart an actor whose node was lost)."""
        now, timeout = time.time(), self.pool.start_timeout_s
        if self.short_since is not None and now - self.short_since > timeout and now - self.last_row_at > timeout:
            raise ActorStartTimeout(
                f"fewer than actors.min={self.pool.min_actors} model actors alive and no image done for "
                f"actors.start_timeout_s={timeout:g} s: the cluster has no room for them ({self.pool.resources_text()}; "
                f"`ray status` shows what is free); add nodes, or lower actors.min / actors.num_gpus / "
                f"actors.num_cpus, then rerun (done images are kept)")
