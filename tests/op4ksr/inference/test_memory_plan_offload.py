"""The memory plan with model.offload=blocks and model.weights=int8 (flux-dev sizes, weightless)."""
import pytest

from op4ksr.inference.batch import HostMemoryError, max_output_megapixels
from op4ksr.inference.memory_plan import MemoryPlan, block_bytes, preset_architecture, weights_bytes
from op4ksr.sizing import OutputSizeError


def test_auto_with_blocks_and_int8_allows_a_larger_output_on_24_gb_than_resident_bf16():
    with pytest.raises(OutputSizeError, match="does not fit a 24 GB GPU.*or model.offload=blocks"):
        max_output_megapixels("auto", preset="flux-dev", dtype="bfloat16", device_memory_gb=24)
    streamed = max_output_megapixels("auto", preset="flux-dev", dtype="bfloat16", device_memory_gb=24,
                                     weights="int8", offload="blocks", host_memory_bytes=64e9)
    resident_int8 = max_output_megapixels("auto", preset="flux-dev", dtype="bfloat16", device_memory_gb=24,
                                          weights="int8")
    assert streamed > resident_int8 > 16.7  # both above 4096x4096; streaming frees the 12 GB of int8 weights
    assert streamed > 50


def test_streamed_weights_are_the_resident_part_and_the_two_largest_blocks():
    arch = preset_architecture("flux-dev")
    assert len(arch.blocks) == 19 + 38
    for mode in ("bfloat16", "int8"):
        plan = MemoryPlan("flux-dev", mode, offload="blocks")
        blocks = block_bytes(arch, mode)
        assert plan.streamed_bytes() == sum(sorted(blocks)[-2:])
        assert plan.resident_weights_bytes() == pytest.approx(weights_bytes(arch, mode) - sum(blocks))
        assert plan.resident_weights_bytes() < 0.5e9  # embedders and the VAE: FLUX.1-dev's blocks are 98 %
        assert plan.host_bytes() == pytest.approx(sum(blocks))
        stages, resident = plan.stage_bytes(1024, 1024), MemoryPlan("flux-dev", mode)
        activations = {s: b - resident.weights_bytes() for s, b in resident.stage_bytes(1024, 1024).items()}
        assert stages["transformer"] == pytest.approx(plan.weights_bytes() + activations["transformer"])
        for stage in ("vae_encode", "vae_decode"):  # the blocks are on the device only during the transformer
            assert stages[stage] == pytest.approx(plan.resident_weights_bytes() + activations[stage])
    bf16, int8 = (MemoryPlan("flux-dev", m, offload="blocks").host_bytes() for m in ("bfloat16", "int8"))
    assert 0.49 < int8 / bf16 < 0.51  # one byte per weight plus a scale per channel
    assert MemoryPlan("flux-dev", "bfloat16").host_bytes() == 0


def test_too_little_host_memory_for_the_blocks_is_refused_with_the_figures():
    with pytest.raises(HostMemoryError, match=r"keeps 23\.7 GB of blocks in host memory, and 16\.0 GB is available"):
        max_output_megapixels("auto", preset="flux-dev", dtype="bfloat16", device_memory_gb=24, offload="blocks",
                              host_memory_bytes=16e9)
    # int8 halves what the host keeps: the same machine holds it
    assert max_output_megapixels("auto", preset="flux-dev", dtype="bfloat16", device_memory_gb=24, offload="blocks",
                                 weights="int8", host_memory_bytes=16e9) > 0


def test_int8_weights_and_its_dequantised_layer_are_counted():
    arch = preset_architecture("flux-dev")
    assert weights_bytes(arch, "int8") == pytest.approx(weights_bytes(arch, "fp8"), rel=0.01)
    plan8, plan16 = MemoryPlan("flux-dev", "int8"), MemoryPlan("flux-dev", "bfloat16")
    extra = plan8.stage_bytes(1024, 1024)["transformer"] - plan8.weights_bytes()
    assert extra - (plan16.stage_bytes(1024, 1024)["transformer"] - plan16.weights_bytes()) == 4 * arch.largest_linear
