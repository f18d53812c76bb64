"""bench/gpu_4k_memory.py on the CPU with the tiny preset: the JSON a GPU run produces, caps not applied."""
import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gpu_4k_memory.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_4k_memory", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_variant_cap_and_size_is_measured_with_the_plan(bench, tmp_path, capsys):
    out = tmp_path / "m.json"
    report = bench.main(["--preset", "tiny", "--device", "cpu", "--sizes", "64x64", "--caps", "none,24",
                         "--repeats", "1", "--json-out", str(out)])
    assert json.loads(out.read_text()) == json.loads(capsys.readouterr().out) == report
    assert report["errors"] == [] and report["budget"]["skipped"] == []
    rows = {(r["variant"], r["cap"], r["size"]): r for r in report["results"]}
    assert len(rows) == 4 * 2
    for (variant, cap, size), row in rows.items():
        assert row["output_finite"] and row["peak_memory_bytes"] > 0 and row["seconds_median"] > 0
        assert row["applied"] is False  # CUDA only
        assert (row["plan_auto_max_megapixels"] is None) == (cap == "none")
        if variant != "bf16":
            assert row["psnr_vs_bf16_db"] > 30  # int8: one byte per weight; streamed: the same numbers
        if variant.endswith("_blocks"):
            assert row["streamed_peak_live_bytes"] > 0
    assert rows[("bf16_blocks", "none", "64x64")]["psnr_vs_bf16_db"] > 100  # identical outputs: psnr is inf


def test_unknown_variants_are_refused(bench, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--variants", "bf16,int4"])
    assert "unknown int4" in capsys.readouterr().err
