import json

import pytest
import torch

from op4ksr.inference.memory_plan import (
    GIB,
    MemoryPlan,
    calibrate,
    load_plan,
    measure_cpu_peak_bytes,
    padded_pixels,
    plan_table,
    preset_architecture,
    stage_activation_bytes,
)
from op4ksr.model import OP4KSR


def test_flux_dev_weights_match_the_model():
    arch = preset_architecture("flux-dev")
    assert 11.8e9 < arch.params < 12.1e9  # FLUX.1-dev transformer + F16 VAE
    assert arch.token_px == 32 and arch.latent_px == 16
    bf16, fp8 = MemoryPlan("flux-dev", "bf16"), MemoryPlan("flux-dev", "fp8")
    assert bf16.weights_bytes() == 2 * arch.params
    assert 0.5 < fp8.weights_bytes() / bf16.weights_bytes() < 0.55


@pytest.mark.parametrize("mode", ["bfloat16", "fp8", "float32"])
@pytest.mark.parametrize("partitions", [0, 4])
def test_peak_grows_with_output_size(mode, partitions):
    plan = MemoryPlan("flux-dev", mode, partitions=partitions)
    sizes = [(1024, 1024), (2160, 3840), (4096, 4096), (8192, 8192)]
    peaks = [plan.peak_bytes(*s) for s in sizes]
    assert peaks == sorted(peaks) and peaks[0] > plan.weights_bytes()
    stages = [plan.stage_bytes(*s) for s in sizes]
    for stage in stages[0]:
        assert [s[stage] for s in stages] == sorted(s[stage] for s in stages)


def test_more_strips_never_raise_the_decode_estimate():
    arch = preset_architecture("flux-dev")
    px = padded_pixels(arch, 4096, 4096)
    decode = [stage_activation_bytes(arch, px, "bfloat16", partitions=p)["vae_decode"] for p in (2, 4, 8, 16)]
    assert decode == sorted(decode, reverse=True)


def test_enough_partitions_cost_less_than_a_whole_decode_at_bf16():
    # the GroupNorm moments are summed band by band (vae._whole_stats), so thin strips save memory
    whole, parts = MemoryPlan("flux-dev", "bf16"), MemoryPlan("flux-dev", "bf16", partitions=16)
    assert parts.stage_bytes(4096, 4096)["vae_decode"] < whole.stage_bytes(4096, 4096)["vae_decode"]


def test_math_attention_is_quadratic_flash_is_linear():
    arch = preset_architecture("flux-dev")
    n1, n2 = padded_pixels(arch, 2048, 2048), padded_pixels(arch, 4096, 4096)
    flash = [stage_activation_bytes(arch, n, "bfloat16", "flash")["transformer"] for n in (n1, n2)]
    math_ = [stage_activation_bytes(arch, n, "bfloat16", "math")["transformer"] for n in (n1, n2)]
    assert flash[1] / flash[0] < 4.1 and math_[1] / math_[0] > 10
    assert math_[1] > 20 * GIB  # 24 heads x 16,896^2 bf16 scores and softmax


def test_max_output_megapixels_by_device():
    analytic = {"measurements": "/nonexistent.json"}  # whatever op4ksr/assets/memory holds later
    bf16, fp8 = load_plan("flux-dev", "bf16", **analytic), load_plan("flux-dev", "fp8", **analytic)
    assert bf16.source.startswith("analytic") and fp8.source.startswith("analytic")
    mp = {gb: bf16.max_output_megapixels(gb) for gb in (24, 48, 80)}
    assert mp[24] == 0.0  # 24 GB of bf16 weights leave nothing on a 24 GB card
    assert 16.8 < mp[48] < mp[80]  # 4096x4096 fits 48 GB
    assert fp8.max_output_megapixels(24) > 16.8  # FP8 puts a 4K output on a 24 GB card
    assert bf16.peak_bytes(4096, 4096) < 40e9 and fp8.peak_bytes(4096, 4096) < 24e9  # issue 8's budgets
    table = plan_table("flux-dev", **analytic)
    assert table["bfloat16"]["max_output_megapixels"]["80"] == round(mp[80], 1)


def test_math_attention_lowers_the_largest_output():
    flash, math_ = MemoryPlan("flux-dev", "bf16"), MemoryPlan("flux-dev", "bf16", attention="math")
    assert math_.max_output_megapixels(80) < flash.max_output_megapixels(80) / 2


def _fake_bench(plan: MemoryPlan, factor: float, extra: float) -> dict:
    rows = []
    for h, w in [(1024, 1024), (2048, 2048), (4096, 4096)]:
        raw = stage_activation_bytes(plan.arch, padded_pixels(plan.arch, h, w), plan.mode)
        rows.append({"mode": "bf16", "height": h, "width": w, "weights_bytes": 24e9, "decode_partitions": 0,
                     "stages": {s: {"peak_memory_bytes": 24e9 + factor * raw[s] + extra} for s in raw}})
    return {"preset": "flux-dev", "device": {"name": "NVIDIA H100 80GB HBM3"}, "results": rows}


def test_calibration_fits_measured_peaks(tmp_path):
    plan = MemoryPlan("flux-dev", "bf16")
    bench = tmp_path / "flux-dev.json"
    bench.write_text(json.dumps(_fake_bench(plan, 1.5, 2e8)))
    fitted = load_plan("flux-dev", "bf16", measurements=bench)
    assert fitted.source.startswith("calibrated") and "H100" in fitted.source
    assert fitted.weights_bytes() == 24e9
    raw = stage_activation_bytes(plan.arch, padded_pixels(plan.arch, 3072, 3072), "bfloat16")
    assert fitted.peak_bytes(3072, 3072) == pytest.approx(24e9 + 1.5 * max(raw.values()) + 2e8, rel=1e-6)
    assert fitted.max_output_megapixels(80) < plan.max_output_megapixels(80)


def test_partitioned_decode_calibrates_from_the_bench_variant():
    bench = _fake_bench(MemoryPlan("flux-dev", "bf16"), 1.0, 0)
    parts = MemoryPlan("flux-dev", "bf16", partitions=4)
    assert calibrate(parts, bench).scale["vae_decode"] == parts.scale["vae_decode"]  # no partitioned data
    bench["results"][-1]["vae_decode_variants"] = {"partitioned_4": {"peak_memory_bytes": 24e9 + 3e9}}
    fitted = calibrate(parts, bench)
    assert fitted.stage_bytes(4096, 4096)["vae_decode"] == pytest.approx(24e9 + 3e9, rel=1e-6)


def test_calibration_ignores_other_presets_and_modes():
    plan = MemoryPlan("flux-dev", "fp8")
    assert calibrate(plan, _fake_bench(MemoryPlan("flux-dev", "bf16"), 2.0, 0)) is plan
    other_preset = calibrate(MemoryPlan("tiny"), _fake_bench(MemoryPlan("flux-dev", "bf16"), 2.0, 0))
    assert other_preset.source.startswith("analytic")


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="memory plan mode"):
        MemoryPlan("flux-dev", "int4")


@pytest.fixture(scope="module")
def tiny_measured():
    """Allocated bytes per stage of the tiny model on the CPU at two sizes (profiler allocation events)."""
    model = OP4KSR.from_preset("tiny")
    out = {}
    for side in (64, 128):
        x = torch.rand(1, 3, side, side)
        with torch.inference_mode():
            enc, z = measure_cpu_peak_bytes(lambda: model.encode(x))
            dec, _ = measure_cpu_peak_bytes(lambda: model.decode(z))
        out[side] = {"vae_encode": enc, "vae_decode": dec}
    return out


def test_measured_cpu_peaks_scale_with_pixels_as_the_plan_does(tiny_measured):
    arch = preset_architecture("tiny")
    for stage in ("vae_encode", "vae_decode"):
        measured = tiny_measured[128][stage] / tiny_measured[64][stage]
        est = [stage_activation_bytes(arch, s * s, "float32")[stage] for s in (64, 128)]
        assert measured == pytest.approx(est[1] / est[0], rel=0.25)  # both ~linear: 4x pixels, ~4x bytes


def test_analytic_estimate_is_in_the_measured_ballpark(tiny_measured):
    # CPU convolutions keep other temporaries than cuDNN's, so only the order of magnitude can match
    arch = preset_architecture("tiny")
    for stage in ("vae_encode", "vae_decode"):
        est = stage_activation_bytes(arch, 128 * 128, "float32")[stage]
        assert 1 / 3 < tiny_measured[128][stage] / est < 3


def test_auto_output_limit_for_the_pipeline():
    from op4ksr.inference.batch import CPU_MAX_OUTPUT_MEGAPIXELS, OutputSizeError, max_output_megapixels

    assert max_output_megapixels(12.5, preset="tiny") == 12.5  # a number stays as configured
    assert max_output_megapixels("auto", preset="flux-dev", device="cpu") == CPU_MAX_OUTPUT_MEGAPIXELS
    plan = load_plan("flux-dev", "bfloat16")
    assert max_output_megapixels("auto", preset="flux-dev", device_memory_gb=80) == plan.max_output_megapixels(80)
    with pytest.raises(OutputSizeError, match="does not fit a 24 GB GPU"):
        max_output_megapixels("auto", preset="flux-dev", device_memory_gb=24)
    with pytest.raises(ValueError, match="needs a checkpoint or a model preset"):
        max_output_megapixels("auto", preset="/models/op4ksr", device_memory_gb=80)
