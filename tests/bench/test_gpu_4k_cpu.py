"""bench/gpu_4k.py end to end on the CPU with the tiny preset: the JSON a GPU run will produce.

One subprocess run (module fixture) at two small sizes, fp32 then FP8, the patch-based baseline at
the larger size; the tests read its JSON. No assertion is on wall-clock time.
"""
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "gpu_4k.py"
SIZES = ("64x64", "96x64")
STAGES = ("vae_encode", "transformer", "vae_decode", "end_to_end")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu_4k") / "gpu_4k.json"
    # tiles of 64 px sharing 32 px: a 32 px seam period, three periods across the 96 px side
    cmd = [sys.executable, str(BENCH), "--preset", "tiny", "--device", "cpu", "--sizes", ",".join(SIZES),
           "--modes", "fp32,fp8", "--repeats", "2", "--tile", "64", "--tile-overlap", "32", "--json-out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout)
    assert printed == json.loads(out.read_text())
    return printed


def _row(report, mode, size):
    return next(r for r in report["results"] if r["mode"] == mode and r["size"] == size)


def test_every_size_and_stage_is_timed_with_memory_and_flops(report):
    assert report["preset"] == "tiny" and report["device"]["type"] == "cpu"
    assert report["errors"] == [] and report["budget"]["skipped"] == []
    for mode in ("fp32", "fp8"):
        for size in SIZES:
            row = _row(report, mode, size)
            assert row["output_finite"]
            for stage in STAGES:
                s = row["stages"][stage]
                assert s["seconds_median"] > 0 and len(s["seconds_all"]) == 2
                assert s["tflop"] > 0 and s["tflops_achieved"] > 0
                assert s["peak_memory_bytes"] >= row["weights_bytes"] > 0
                assert "utilisation" in s  # null on a CPU: no datasheet peak
            e2e = row["stages"]["end_to_end"]
            assert e2e["tflop"] == pytest.approx(sum(row["stages"][s]["tflop"] for s in STAGES[:3]), rel=1e-3)


def test_larger_outputs_cost_more_flops(report):
    small, large = (_row(report, "fp32", s)["stages"]["end_to_end"]["tflop"] for s in SIZES)
    assert large > 1.3 * small  # 1.5x the pixels; the prompt tokens are a fixed cost


def test_patch_based_against_patch_free_with_seam_scores(report):
    (row,) = report["patch_based"]
    assert row["size"] == SIZES[-1] and row["period_px"] == 32 and row["tiles"] > 1
    for side in ("patch_based", "patch_free"):
        assert row[side]["seconds_median"] > 0
        assert math.isfinite(row[side]["seam_score"])
    assert row["patch_based_over_patch_free_seconds"] > 0


def test_fp8_mode_reports_its_error_against_the_base_mode(report):
    fp8 = report["fp8"]
    assert fp8["status"] == "ok" and fp8["backend"] in ("native", "torchao") and fp8["layers"] > 0
    assert set(fp8["psnr_vs_fp32_db"]) == set(SIZES)
    assert all(20 < db < 100 for db in fp8["psnr_vs_fp32_db"].values())
    assert fp8["weights_bytes"] < _row(report, "fp32", SIZES[0])["weights_bytes"]


def test_decode_variants_and_settings_are_recorded(report):
    variants = _row(report, "fp32", SIZES[-1])["vae_decode_variants"]
    assert set(variants) == {"channels_last", "partitioned_4"}
    settings = report["settings"]
    assert settings["attention"] == "native" and settings["compile"] is False
    assert settings["cuda_graphs"]["enabled"] is False and settings["cuda_graphs"]["note"]
    assert report["targets"]["bf16"]["met"] is None  # no 4096x4096 row on this run
    assert set(report["memory_plan"]) == {"bfloat16", "fp8"}
    assert report["versions"]["torch"] == torch.__version__


@pytest.fixture(scope="module")
def bench_module():
    """bench/gpu_4k.py imported in this process (the cases below need no fresh interpreter)."""
    spec = importlib.util.spec_from_file_location("gpu_4k", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_budget_skips_what_does_not_fit(bench_module, tmp_path, capsys):
    out = tmp_path / "g.json"
    data = bench_module.main(["--preset", "tiny", "--device", "cpu", "--sizes", "64x64", "--modes", "fp32,fp8",
                              "--repeats", "1", "--patch-sizes", "none", "--budget-s", "0", "--json-out", str(out)])
    assert json.loads(out.read_text()) == json.loads(capsys.readouterr().out) == data
    assert data["results"] == [] and data["fp8"]["status"].startswith("skipped")
    assert [s["what"] for s in data["budget"]["skipped"]] == ["fp32 64x64", "fp8 conversion"]


@pytest.mark.parametrize("argv, message", [(["--modes", "fp8"], "--modes must be a base mode"),
                                           (["--modes", "bf16,int8"], "--modes must be a base mode")])
def test_bad_arguments_are_refused(bench_module, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        bench_module.parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_sizes_are_width_by_height(bench_module):
    assert bench_module.parse_sizes("3840x2160,64x64") == [(2160, 3840), (64, 64)]
