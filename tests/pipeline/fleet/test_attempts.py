"""Attempts of an input that kills its worker: counted outside the actor, narrowed to the culprit, bounded,
and not retried by a later run unless asked (fast: no Ray; the end-to-end cases are in
test_fleet_faults.py)."""
import io
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.config import load_config
from jobs.specs import build_run_spec
from pipeline.listing.done_index import DoneIndex, DueSplit
from pipeline.listing.inputs import INPUTS_SCHEMA
from pipeline.fleet.attempts import Action, AttemptBook, Verdict, give_up
from pipeline.manifest.records import MANIFEST_SCHEMA, WORKER_DIED, new_record
from pipeline.storage import open_storage


def test_a_batch_that_died_goes_one_input_at_a_time_until_the_culprit_is_given_up():
    book = AttemptBook(max_attempts=3)
    batch = ["a", "b", "poison"]
    assert book.begin(batch) is True  # a first attempt: whole
    # the process died: Ray reruns the batch, which the book still holds open
    assert book.begin(batch) is False
    assert book.begin_alone("a") == Verdict(Action.RUN, attempts=2)
    book.finish_alone("a", {"key": "a", "status": "ok"})
    # b never finishes: the process dies again (a neighbour)
    assert book.begin_alone("b") == Verdict(Action.RUN, attempts=2)
    # third attempt of the batch: a keeps its record, b and poison go on
    assert book.begin(batch) is False
    assert book.begin_alone("a") == Verdict(Action.DONE, record={"key": "a", "status": "ok"})
    assert book.begin_alone("b") == Verdict(Action.RUN, attempts=3)
    book.finish_alone("b", {"key": "b", "status": "ok"})
    assert book.begin_alone("poison") == Verdict(Action.RUN, attempts=2)
    assert book.begin(batch) is False
    assert book.begin_alone("poison") == Verdict(Action.RUN, attempts=3)
    assert book.begin(batch) is False
    assert book.begin_alone("poison") == Verdict(Action.GIVE_UP, attempts=3, alone=2)
    book.end(batch)
    assert book.open == {}  # a finished batch costs the book nothing
    assert book.begin(batch) is True


def test_an_input_is_given_up_only_after_an_attempt_alone():
    book = AttemptBook(max_attempts=1)
    assert book.begin(["a", "poison"]) is True and book.begin(["a", "poison"]) is False
    # one attempt already, but in a batch of two: which input killed it is not known yet
    assert book.begin_alone("poison") == Verdict(Action.RUN, attempts=2)
    assert book.begin(["a", "poison"]) is False
    assert book.begin_alone("poison") == Verdict(Action.GIVE_UP, attempts=2, alone=1)
    single = AttemptBook(max_attempts=1)
    # a batch of one shared its process with another call (two at once): its neighbour may have killed it
    assert single.begin(["x"]) is True and single.begin(["x"]) is False
    assert single.begin_alone("x") == Verdict(Action.RUN, attempts=2)
    assert single.begin(["x"]) is False
    assert single.begin_alone("x") == Verdict(Action.GIVE_UP, attempts=2, alone=1)


def _spec(tmp_path, *overrides):
    cfg = load_config([], [f"input.uri={tmp_path / 'in'}", f"output.uri={tmp_path / 'out'}", *overrides])
    return build_run_spec(cfg, "r2", "")


def test_a_given_up_input_is_one_failed_row_and_a_rerun_does_not_retry_it_unless_asked(tmp_path):
    spec = _spec(tmp_path)
    row = give_up(new_record("poison.png", "r1", input_etag="e1", model_id=spec.model_id,
                             params_hash=spec.params_hash), 3, 2, spec.pool.max_attempts_per_input)
    assert (row["status"], row["error_class"], row["attempts"]) == ("failed", WORKER_DIED, 3)
    assert "3 time(s)" in row["error"] and "run.retry_given_up=true" in row["error"]
    out = open_storage(str(tmp_path / "out"))
    other = new_record("fine.png", "r1", status="failed", error_class="StorageError", input_etag="e2",
                       model_id=spec.model_id, params_hash=spec.params_hash)
    table = pa.Table.from_pylist([{**row, "run_id": "r1"}, other], schema=MANIFEST_SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    out.put("runs/r1/manifest/part-00000.parquet", sink.getvalue())

    done, given_up = DoneIndex.build_with_given_up(out, spec.model_id, spec.params_hash, exclude_run="r2")
    assert (len(done), len(given_up)) == (0, 1)
    listing = pa.RecordBatch.from_pylist([
        {"key": "poison.png", "etag": "e1", "output_key": "images/poison.png", "collides_with": None},
        {"key": "poison.png-changed", "etag": "e9", "output_key": "images/x.png", "collides_with": None},
        {"key": "fine.png", "etag": "e2", "output_key": "images/fine.png", "collides_with": None}],
        schema=INPUTS_SCHEMA)
    for retry, expected_due in ((False, 2), (True, 3)):
        rows: list[dict] = []
        split = DueSplit(done, out, f"runs/r2-{retry}/due.parquet", spec, rows.extend,
                         given_up=None if retry else given_up)
        split(listing)
        assert split.close(INPUTS_SCHEMA) == expected_due
        due = pq.read_table(io.BytesIO(out.get(f"runs/r2-{retry}/due.parquet")))["key"].to_pylist()
        if retry:
            assert rows == [] and "poison.png" in due
        else:  # not retried: a failed row of its own, and no other input held back
            assert due == ["poison.png-changed", "fine.png"] and split.given_up == 1
            assert [(r["key"], r["status"], r["error_class"], r["attempts"]) for r in rows] == \
                [("poison.png", "failed", WORKER_DIED, 0)]


def test_max_attempts_per_input_zero_is_one_line_before_anything_is_listed(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"not read")
    result = subprocess.run([sys.executable, "-m", "jobs.cli", "backfill", f"input.uri={tmp_path / 'in'}",
                             f"output.uri={tmp_path / 'out'}", "pipeline.max_attempts_per_input=0"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "op4ksr backfill: pipeline.max_attempts_per_input=0 must be at least 1"]
    assert not (tmp_path / "out").exists()  # nothing listed, nothing written
