"""What a command imports: `op4ksr report` / `cost` read Parquet without torch, a backfill needs no
optional package, and a missing extra is a one-line error naming it (op4ksr/extras.py).

Each case runs in a fresh interpreter, since this test process has imported everything already."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from op4ksr.extras import MissingExtraError, require
from pipeline.manifest.records import MANIFEST_SCHEMA, new_record

ROOT = Path(__file__).resolve().parents[2]
OPTIONAL = ("moto", "transformers", "peft", "skimage", "cv2")  # the extras' packages (pyproject.toml)


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def _run_folder(tmp_path: Path) -> Path:
    """A run folder with a two-row manifest, as a backfill leaves it."""
    run = tmp_path / "out" / "runs" / "r1"
    (run / "manifest").mkdir(parents=True)
    rows = [new_record("a.png", "r1", status="ok", actor_id="n1", device="cpu", started_at=1.78e9, gpu_seconds=1.0,
                       t_model=1.0, model_started_at=1.78e9 + 1, cpu_seconds=0.2, bytes_in=1000, requests_get=1,
                       actor_started_at=1.78e9 - 10, actor_load_seconds=2.0, actor_warmup_seconds=1.0),
            new_record("b.png", "r1", status="failed", actor_id="n1", started_at=1.78e9, cpu_seconds=0.1)]
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), run / "manifest" / "part-00000.parquet")
    return run


def test_report_and_cost_read_parquet_without_importing_torch(tmp_path):
    run = _run_folder(tmp_path)
    chart = tmp_path / "cost.png"
    done = _python(
        "import sys, json\n"
        "from jobs.cli import main\n"
        f"codes = [main(['report', {str(run)!r}]), main(['cost', {str(run)!r}, '--chart', {str(chart)!r}])]\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'diffusers', 'ray'})\n"
        "print(json.dumps({'codes': codes, 'heavy': heavy}))\n")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"codes": [0, 0], "heavy": []}
    assert (run / "cost.parquet").is_file() and chart.read_bytes()[:4] == b"\x89PNG"


def test_a_backfill_imports_no_optional_package_and_the_demo_names_its_extra(tmp_path):
    hide = "".join(f"sys.modules[{name!r}] = None\n" for name in OPTIONAL)  # as if not installed
    done = _python(
        "import sys\n" + hide +
        "import jobs.backfill, jobs.upscale, actors.upscaler, pipeline.run.backfill, pipeline.run.dataflow\n"
        "import pipeline.ledger.finish, op4ksr.loading, op4ksr.model\n"
        "from jobs.cli import main\n"
        f"sys.exit(main(['demo', '--out', {str(tmp_path / 'demo')!r}]))\n")
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("op4ksr demo: the embedded S3 server") and "pip install 'op4ksr[demo]'" in lines[-1]
    assert "Traceback" not in done.stderr


def test_backfill_refuses_an_embedded_server_it_would_leave_empty(capsys):
    from jobs.cli import main

    assert main(["backfill", "--config", "demo"]) == 2
    assert "storage.embedded=true starts an empty S3 server" in capsys.readouterr().err


def test_require_names_the_extra_to_install():
    assert require("json", "demo", "reading JSON") is json
    with pytest.raises(MissingExtraError, match=r"op4ksr import needs the package 'no_such_package_x'.*"
                                                r"pip install 'op4ksr\[import\]'"):
        require("no_such_package_x.sub", "import", "op4ksr import")
