"""Inputs whose processing kills the model actor's process: attempts counted outside the actor, bounded.

Ray Data 2.60 creates its pool actors with max_restarts=-1 and max_task_retries=-1: a killed
actor is replaced and its batch rerun on it, so a batch that kills its process every time is
rerun for ever (and map_batches' way to change those knobs, **ray_remote_args, is deprecated in
2.60). We keep Ray's retries and bound them ourselves: the model stage asks the run's
`AttemptBook` (a small actor on the driver's node, which outlives every model actor) before
each batch, and tells it when the batch is done.
- A batch none of whose inputs the book holds open is a first attempt: it runs whole.
- A batch the book still holds open was begun before and never finished: its process died (the
  batch killed it, or a neighbour did, or its node was lost). It now runs one input at a time,
  each alone on the process (pipeline/fleet/model_stage.py), each attempt counted; an input done
  in an earlier attempt keeps its record and is not redone.
- An input with `pipeline.max_attempts_per_input` attempts, at least one of them alone, is given
  up: one `failed` row, error_class WorkerDiedError, with its attempts; the run goes on.
A later run does not retry it unless run.retry_given_up is true (pipeline/listing/done_index.py).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from pipeline.manifest.records import WorkerDiedError, failed


class Action(str, enum.Enum):
    """What the model stage does with one input of a batch that died."""

    RUN = "run"  # run it alone: its attempt is counted
    DONE = "done"  # an earlier attempt finished it: keep that record
    GIVE_UP = "give_up"  # its attempts are spent: its failed row


@dataclass(frozen=True)
class Verdict:
    """The book's answer for one input of a batch that died (AttemptBook.begin_alone)."""

    action: Action
    attempts: int = 0  # RUN: this attempt's number; GIVE_UP: the attempts it had
    alone: int = 0  # GIVE_UP: how many of them alone
    record: dict | None = None  # DONE: the record of the attempt that finished it


class AttemptBook:
    """The attempts of the inputs in flight (a Ray actor on the driver's node); forgets a batch once done."""

    def __init__(self, max_attempts: int) -> None:
        self.max_attempts = max_attempts
        self.open: dict[str, dict] = {}  # key -> {"attempts", "alone", "record": done in an earlier attempt}

    def begin(self, keys: list[str]) -> bool:
        """True: run the batch whole (a first attempt, now counted); False: it died before, go one at a time."""
        if any(key in self.open for key in keys):
            return False
        for key in keys:  # not alone, even a batch of one: a whole batch shares its process with another call
            self.open[key] = {"attempts": 1, "alone": 0, "record": None}
        return True

    def begin_alone(self, key: str) -> Verdict:
        """For one input of a batch that died: DONE if an earlier attempt finished it, GIVE_UP if
        it is spent, else RUN (its attempt counted now)."""
        entry = self.open.setdefault(key, {"attempts": 0, "alone": 0, "record": None})
        if entry["record"] is not None:
            return Verdict(Action.DONE, record=entry["record"])
        if entry["attempts"] >= self.max_attempts and entry["alone"] >= 1:
            return Verdict(Action.GIVE_UP, attempts=entry["attempts"], alone=entry["alone"])
        entry["attempts"] += 1
        entry["alone"] += 1
        return Verdict(Action.RUN, attempts=entry["attempts"])

    def finish_alone(self, key: str, record: dict) -> None:
        self.open[key]["record"] = record

    def end(self, keys: list[str]) -> None:
        """The batch's rows are on their way to the driver: nothing of it is open any more."""
        for key in keys:
            self.open.pop(key, None)


def give_up(record: dict, attempts: int, alone: int, max_attempts: int) -> dict:
    """`record` as the failed row of an input whose processing killed its worker every time."""
    record.update(attempts=attempts)
    return failed(record, WorkerDiedError(
        f"the model actor's process died while processing it, {attempts} time(s) ({alone} alone; "
        f"pipeline.max_attempts_per_input={max_attempts}); given up: a later run retries it only with "
        f"run.retry_given_up=true"))
