"""Ctrl-C in backfill and compare (issue 27, item 5): one line saying what was finished and how to resume,
exit status 130; the interrupted run's finished images are recorded and priced, so a resumed comparison
prices every image it counts."""
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

import pipeline.run.console
from jobs.cli import main as cli
from tests.badinputs import write_noise_pngs


def _ctrl_c_in_printer(monkeypatch, which: int):
    """The `which`-th progress printer a command makes raises KeyboardInterrupt (as Ctrl-C does) at its first line."""
    made = []

    def printer(*args, **kwargs):
        made.append(1)
        number = len(made)

        def show(progress):
            if number == which:
                raise KeyboardInterrupt

        return show

    monkeypatch.setattr(pipeline.run.console, "progress_printer", printer)


def _error_lines(err: str, command: str) -> list[str]:
    """The command's error lines (the CLI's `op4ksr COMMAND: ...`)."""
    return [line for line in err.splitlines() if line.startswith(f"op4ksr {command}: ")]


COMMON = ["--config", "local", "actors.torch_threads=1", "actors.warmup_shapes=[[64,64]]"]


@pytest.mark.slow
def test_ctrl_c_in_backfill_is_one_line_records_what_was_done_and_the_rerun_resumes(tmp_path, monkeypatch, capsys,
                                                                                    ray_local):
    write_noise_pngs(tmp_path / "in", 6)
    args = ["backfill", *COMMON, f"input.uri={tmp_path / 'in'}", f"output.uri={tmp_path / 'out'}", "run.id=first"]
    _ctrl_c_in_printer(monkeypatch, 1)
    capsys.readouterr()  # what starting the session's Ray printed
    assert cli(args) == 130
    err = capsys.readouterr().err
    errors = _error_lines(err, "backfill")  # besides the run's notes (e.g. no signing identity)
    assert len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith("op4ksr backfill: interrupted: run first finished ") and "rerun the same" in errors[0]
    cost = pq.read_table(tmp_path / "out" / "runs" / "first" / "cost.parquet").to_pandas()
    done = cost[cost["status"] == "ok"]
    assert len(done) >= 1 and done["total_usd"].notna().all()  # what it finished is priced
    # every image it finished has its row, those whose rows were in flight at Ctrl-C too (from their reports)
    reports = [json.loads(p.read_text()) for p in (tmp_path / "out" / "reports").glob("*.json")]
    assert sorted(done["key"]) == sorted(r["key"] for r in reports if r["run_id"] == "first")
    monkeypatch.undo()
    assert cli(args[:-1] + ["run.id=second"]) == 0
    rows = pd.concat(pd.read_parquet(p) for p in (tmp_path / "out" / "runs" / "second" / "manifest").glob("*.parquet"))
    assert len(rows) == 6 and (rows["status"] == "skipped").sum() >= len(done)


@pytest.mark.slow
def test_ctrl_c_in_compare_names_the_finished_variants_and_the_resumed_comparison_prices_every_image(
        tmp_path, monkeypatch, capsys, ray_local):
    write_noise_pngs(tmp_path / "in", 3)
    args = ["compare", *COMMON, f"input.uri={tmp_path / 'in'}", f"output.uri={tmp_path / 'cmp'}", "--sample", "3",
            "--variant", "a sr.fidelity=backproject", "--variant", "b sr.fidelity=wavelet", "actors.batch_size=1"]
    _ctrl_c_in_printer(monkeypatch, 2)  # in variant b, at its first image
    capsys.readouterr()  # what starting the session's Ray printed
    assert cli(args) == 130
    err = capsys.readouterr().err
    errors = _error_lines(err, "compare")
    assert len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith("op4ksr compare: interrupted in variant b: variants finished: a; "), err
    monkeypatch.undo()
    assert cli(args) == 0
    table = pd.read_parquet(tmp_path / "cmp" / "compare" / "comparison.parquet")
    assert len(table) == 6 and (table["status"] == "ok").all()
    assert table["total_usd"].notna().all()  # b's images done before Ctrl-C are priced from the interrupted run
    assert "not priced" not in capsys.readouterr().err
