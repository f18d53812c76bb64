"""Incremental backfills and one run at a time per output prefix.

Two small JSON objects under the output prefix's `runs/`:

- `runs/_watermark.json`: inputs modified before `time` are done (for this input uri, model and
  output parameters). A run that ends with no failures (inputs given up on do not count: no run
  retries them unless run.retry_given_up, and then a run without --since last), listed everything from the previous
  watermark on and was not cut short by `run.limit` moves it to the moment its listing started,
  minus `run.watermark_margin_seconds`. The margin covers clock skew between hosts and the
  store, S3's whole-second timestamps, and uploads that were in flight while the listing ran
  (S3 stamps an object with the time its upload began). What the margin makes a run list
  twice costs one report lookup per object: the exactly-once check skips it.
- `runs/_lock.json`: the run holding the prefix (host, pid, run id, started, expires). It is
  created with `put_if_absent`, refreshed by a heartbeat thread every quarter of
  `run.lock_ttl_seconds` with `put_if_match`, and deleted at the end, on failure too. A lock
  past its `expires` belongs to a run that died: the next run takes it over, by compare-and-swap
  so that of two runs taking over one stale lock only one wins. So does a lock whose holder ran
  on this host, in this pid namespace, and whose process is gone (a run killed on a workstation
  need not wait out the TTL; on Kubernetes every run has a new pod, so there the TTL decides).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import socket
import threading
import uuid
from typing import Iterator

from op4ksr.errors import UserError
from pipeline.manifest.layout import RUNS
from pipeline.storage import ObjectNotFoundError, Storage, StorageError

WATERMARK_KEY = f"{RUNS}_watermark.json"
LOCK_KEY = f"{RUNS}_lock.json"
ACQUIRE_TRIES = 3  # a lock that vanishes or changes between our reads is looked at again

log = logging.getLogger("op4ksr.incremental")


class RunLockedError(UserError):
    """Another run holds the output prefix's lock; the message names it."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def parse_since(value) -> str | dt.datetime | None:
    """run.since as None (everything), "last" (the watermark) or an aware UTC datetime.

    A time without a zone is taken as UTC.
    """
    if value is None or value == "":
        return None
    if value == "last":
        return "last"
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"run.since={value!r} is neither 'last' nor an ISO 8601 time "
                         "such as 2026-05-01T02:00:00Z") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)


# -- the watermark ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Watermark:
    """Inputs under `input_uri` modified before `time` are done for `model_id` and `params_hash`."""

    time: dt.datetime
    listing_started: dt.datetime
    margin_seconds: float
    run_id: str
    input_uri: str
    model_id: str
    params_hash: str

    def to_json(self) -> bytes:
        record = dataclasses.asdict(self) | {"time": self.time.isoformat(),
                                             "listing_started": self.listing_started.isoformat()}
        return json.dumps(record, indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Watermark:
        record = json.loads(data)
        record["time"] = dt.datetime.fromisoformat(record["time"])
        record["listing_started"] = dt.datetime.fromisoformat(record["listing_started"])
        return cls(**record)

    def applies_to(self, spec) -> bool:
        return (self.input_uri, self.model_id, self.params_hash) == (spec.input.uri, spec.model_id, spec.params_hash)


def read_watermark(storage: Storage) -> Watermark | None:
    """The output prefix's watermark, or None if no run has left one (or it cannot be read)."""
    try:
        return Watermark.from_json(storage.get(WATERMARK_KEY))
    except ObjectNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("%s is unreadable (%s): treating it as absent", storage.uri_for(WATERMARK_KEY), exc)
        return None


def resolve_since(since, previous: Watermark | None, spec) -> dt.datetime | None:
    """The listing's lower bound on last_modified for a parsed run.since; None: list everything."""
    if since != "last":
        return since
    if previous is None:
        log.info("--since last: no watermark yet: listing every input")
        return None
    if not previous.applies_to(spec):
        log.warning("--since last: the watermark (run %s) is for another input uri, model or output "
                    "parameters: listing every input", previous.run_id)
        return None
    log.info("--since last: listing inputs modified after %s (watermark of run %s)",
             previous.time.isoformat(), previous.run_id)
    return previous.time


def _covers_all_before(since: dt.datetime | None, previous: Watermark | None, spec) -> bool:
    """Whether a run listing from `since` on, plus what `previous` says is done, covers all time before it."""
    return since is None or (previous is not None and previous.applies_to(spec) and since <= previous.time)


# -- the lock -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LockHolder:
    """The body of runs/_lock.json; `token` tells this holder's writes from any other's."""

    host: str
    pid: int
    run_id: str
    started: str
    expires: str
    token: str
    pid_namespace: str = ""  # /proc/self/ns/pid: a pid means this process only within it

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes) -> LockHolder:
        return cls(**json.loads(data))

    @property
    def expires_at(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.expires)

    def describe(self) -> str:
        return (f"run {self.run_id} on host {self.host} (pid {self.pid}), started {self.started}, "
                f"lock expires {self.expires}")


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _died_here(holder: LockHolder | None) -> bool:
    """Whether `holder` ran on this host in this pid namespace and its process no longer exists."""
    if holder is None or holder.host != socket.gethostname() or not holder.pid_namespace:
        return False
    if holder.pid_namespace != _pid_namespace():
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


class RunLock:
    """This process's hold on runs/_lock.json, refreshed by a heartbeat thread until `release()`."""

    def __init__(self, storage: Storage, holder: LockHolder, ttl_seconds: float, etag: str, written: dt.datetime):
        self.storage, self.holder, self.ttl_seconds, self.etag = storage, holder, ttl_seconds, etag
        self.written = written  # the store's clock when the lock was taken
        self.lost: str | None = None  # who took the lock over, if anyone did
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    @classmethod
    def acquire(cls, storage: Storage, run_id: str, ttl_seconds: float, heartbeat: bool = True) -> RunLock:
        """Take the lock, or take over an expired one; RunLockedError naming the holder if it is held."""
        if not ttl_seconds > 0:
            raise ValueError(f"run.lock_ttl_seconds={ttl_seconds} must be positive")
        now = _now()
        mine = LockHolder(socket.gethostname(), os.getpid(), run_id, now.isoformat(),
                          (now + dt.timedelta(seconds=ttl_seconds)).isoformat(), uuid.uuid4().hex,
                          _pid_namespace())
        body = mine.to_json()
        for _ in range(ACQUIRE_TRIES):
            if storage.put_if_absent(LOCK_KEY, body, "application/json"):
                return cls._held(storage, mine, ttl_seconds, heartbeat)
            info = storage.head(LOCK_KEY)
            if info is None:
                continue  # released since
            try:
                current = storage.get(LOCK_KEY)
            except ObjectNotFoundError:
                continue
            if current == body:  # our own write, whose reply was lost and retried
                return cls._held(storage, mine, ttl_seconds, heartbeat)
            try:
                holder = LockHolder.from_json(current)
                expires, who = holder.expires_at, holder.describe()
            except (ValueError, KeyError, TypeError):  # unreadable: judged by its age
                holder, expires = None, info.last_modified + dt.timedelta(seconds=ttl_seconds)
                who = f"an unreadable lock written {info.last_modified.isoformat()}"
            if _now() < expires and not _died_here(holder):
                raise RunLockedError(
                    f"{storage.uri_for(LOCK_KEY)} is held by {who}: wait for that run to end, or, if it "
                    f"died, for its lock to expire (run.lock_ttl_seconds); delete the object only if "
                    f"you are sure no run is using this output prefix")
            if storage.put_if_match(LOCK_KEY, body, info.etag, "application/json"):
                log.warning("took over the lock of %s: %s", who,
                            "expired" if _now() >= expires else "its process is gone")
                return cls._held(storage, mine, ttl_seconds, heartbeat)
        raise RunLockedError(f"{storage.uri_for(LOCK_KEY)} changed {ACQUIRE_TRIES} times while this run "
                             "tried to take it: another run is starting on the same output prefix")

    @classmethod
    def _held(cls, storage: Storage, holder: LockHolder, ttl_seconds: float, heartbeat: bool) -> RunLock:
        info = storage.head(LOCK_KEY)  # fresh, so nobody can have replaced it yet
        lock = cls(storage, holder, ttl_seconds, info.etag if info else "", info.last_modified if info else _now())
        if heartbeat:
            lock._heartbeat = threading.Thread(target=lock._beat, name="op4ksr-lock-heartbeat", daemon=True)
            lock._heartbeat.start()
        return lock

    def refresh(self) -> bool:
        """Push `expires` a TTL ahead; False (and `lost` set) if another run has taken the lock."""
        if self.lost:
            return False
        expires = _now() + dt.timedelta(seconds=self.ttl_seconds)
        renewed = dataclasses.replace(self.holder, expires=expires.isoformat())
        body = renewed.to_json()
        if self.storage.put_if_match(LOCK_KEY, body, self.etag, "application/json") or self._reads(body):
            self.holder = renewed
            info = self.storage.head(LOCK_KEY)
            self.etag = info.etag if info else self.etag
            return True
        try:
            self.lost = LockHolder.from_json(self.storage.get(LOCK_KEY)).describe()
        except (StorageError, ValueError, KeyError, TypeError):
            self.lost = "nobody (the lock object was deleted)"
        log.warning("run %s lost the lock on %s to %s: this run goes on but will not move the watermark",
                    self.holder.run_id, self.storage.uri_for(LOCK_KEY), self.lost)
        return False

    def _reads(self, body: bytes) -> bool:
        try:
            return self.storage.get(LOCK_KEY) == body
        except ObjectNotFoundError:
            return False

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_seconds / 4):
            try:
                if not self.refresh():
                    return
            except (StorageError, OSError) as exc:  # a blip: the next beat tries again
                log.warning("refreshing %s failed: %s", self.storage.uri_for(LOCK_KEY), exc)

    def release(self) -> None:
        """Stop the heartbeat and delete the lock if it is still this run's."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        if self.lost:
            return
        info = self.storage.head(LOCK_KEY)
        if info is not None and info.etag == self.etag:
            self.storage.delete(LOCK_KEY)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# -- a run: lock, window, watermark -------------------------------------------------------

class Increment:
    """What one run lists (`since`) and whether it may move the watermark when it finishes."""

    def __init__(self, storage: Storage, spec, lock: RunLock | None):
        self.storage, self.spec, self.lock = storage, spec, lock
        # When the listing starts, on our clock and (through the lock's Last-Modified) the
        # store's: the earlier of the two, so that neither clock being behind loses an input.
        self.listing_started = min(_now(), lock.written) if lock else _now()
        self.previous = read_watermark(storage)
        self.since = resolve_since(parse_since(spec.since), self.previous, spec)

    def finish(self, summary) -> Watermark | None:
        """Move the watermark if the run earned it (see the module docstring); the new one or None."""
        spec = self.spec
        reasons = [why for why, bad in (
            ("a dry run", spec.dry_run),
            # an input given up on (pipeline/fleet/attempts.py) is not retried, so it does not hold the watermark
            (f"{summary.failed - summary.given_up} input(s) failed and will be retried",
             summary.failed - summary.given_up),
            ("run.limit cut the listing short", spec.limit is not None and summary.total >= spec.limit),
            ("the run listed only inputs after a time later than the watermark",
             not _covers_all_before(self.since, self.previous, spec)),
            ("the run lost its lock", self.lock is not None and self.lock.lost)) if bad]
        if reasons:
            log.info("watermark not moved: %s", "; ".join(reasons))
            return None
        margin = float(spec.watermark_margin_seconds)
        watermark = Watermark(self.listing_started - dt.timedelta(seconds=margin), self.listing_started, margin,
                              spec.run_id, spec.input.uri, spec.model_id, spec.params_hash)
        self.storage.put(WATERMARK_KEY, watermark.to_json(), "application/json")
        log.info("watermark moved to %s: the next --since last lists inputs modified after it",
                 watermark.time.isoformat())
        return watermark


@contextlib.contextmanager
def incremental_run(storage: Storage, spec) -> Iterator[Increment]:
    """Hold the output prefix's lock (not for dry runs) for the block; yields the run's Increment."""
    if spec.dry_run:
        yield Increment(storage, spec, None)
        return
    with RunLock.acquire(storage, spec.run_id, float(spec.lock_ttl_seconds)) as lock:
        yield Increment(storage, spec, lock)
