"""model.offload=blocks and model.weights=int8 on the tiny model: streamed equals resident, int8 is stored and refused right.

Streamed and resident outputs are two model objects' forwards, so they are compared within the
house's stated tolerance (tests/tolerance.py: CPU kernels pick vector paths by memory alignment, and
streamed blocks are read into fresh buffers), in bf16 within two bf16 steps at 1.0 (2 * 2**-8); the
weights themselves are compared bit for bit. int8 against float is a different computation and is
compared by PSNR, with the bound stated where asserted.
"""

import pytest
import torch

from op4ksr.checkpoint import weight_files
from op4ksr.imageops import psnr
from op4ksr.model import OP4KSR
from op4ksr.offload import streamer_of
from op4ksr.presets import SHIPPED_CHECKPOINTS
from op4ksr.quantize import Int8Linear, WeightsModeError
from tests.int8_checkpoints import write_int8_tiny
from tests.tolerance import FORWARD_ATOL, assert_forwards_close

TINY = SHIPPED_CHECKPOINTS["tiny-trained"]


def _lr(seed: int = 0, size=(24, 20)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, *size, generator=g)


@pytest.fixture(scope="module")
def int8_checkpoint(tmp_path_factory):
    """tiny-trained with its transformer written as `op4ksr import --weights int8` writes it."""
    return write_int8_tiny(tmp_path_factory.mktemp("int8") / "tiny-int8", inference={"fidelity": "none"})


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streamed_blocks_give_the_resident_output_exactly(dtype):
    resident = OP4KSR.from_pretrained(TINY, dtype=dtype)
    streamed = OP4KSR.from_pretrained(TINY, dtype=dtype, offload="blocks")
    x = _lr()
    expected = resident.upscale(x)
    atol = FORWARD_ATOL if dtype == torch.float32 else 2 * 2**-8
    assert_forwards_close(streamed.upscale(x), expected, atol)
    assert_forwards_close(streamed.upscale(x), expected, atol)  # a second forward reads the blocks again
    streamer = streamer_of(streamed.transformer)
    assert streamer.visits == 2 * 2  # one double and one single block, two forwards
    blocks = list(streamed.transformer.transformer_blocks) + list(streamed.transformer.single_transformer_blocks)
    assert all(p.device.type == "meta" for b in blocks for p in b.parameters())  # released after running
    assert streamed.transformer.x_embedder.weight.device.type == "cpu"  # the rest stays resident


def test_a_preset_streams_from_host_memory_with_the_same_output():
    x = _lr(1)
    expected = OP4KSR.from_preset("tiny").upscale(x)
    streamed = OP4KSR.from_preset("tiny", offload="blocks")
    assert_forwards_close(streamed.upscale(x), expected)
    assert streamer_of(streamed.transformer).visits == 2


def test_int8_checkpoint_stores_int8_and_matches_quantising_at_load(int8_checkpoint):
    from op4ksr.tensorfile import read_header

    (path,) = weight_files(int8_checkpoint / "transformer")
    header, _ = read_header(path)
    q = header["transformer_blocks.0.attn.to_q.weight"]
    assert q.dtype == torch.int8 and header["transformer_blocks.0.attn.to_q.weight_scale"].dtype == torch.float32
    assert header["x_embedder.weight"].dtype == torch.float32  # outside the blocks: as before
    stored = OP4KSR.from_pretrained(int8_checkpoint, weights="int8")
    assert isinstance(stored.transformer.transformer_blocks[0].attn.to_q, Int8Linear)
    at_load = OP4KSR.from_pretrained(TINY, weights="int8")
    x = _lr(2)
    stored.fidelity = at_load.fidelity  # the copy saved fidelity none; compare the same computation
    assert_forwards_close(stored.upscale(x), at_load.upscale(x))  # same round(W / scale), same scale
    streamed = OP4KSR.from_pretrained(int8_checkpoint, weights="int8", offload="blocks")
    streamed.fidelity = at_load.fidelity
    assert_forwards_close(streamed.upscale(x), at_load.upscale(x))


def test_int8_output_is_close_to_float(int8_checkpoint):
    model = OP4KSR.from_pretrained(TINY)
    int8 = OP4KSR.from_pretrained(int8_checkpoint, weights="int8")
    for m in (model, int8):
        m.fidelity = type(m.fidelity)()  # the model's own output, no correction that would hide the error
    x = _lr(3, (32, 32))
    # bound: 8-bit weights per channel give ~48 dB weight SNR; the output measured 50-65 dB here
    assert psnr(int8.upscale(x), model.upscale(x)) > 40


def test_weights_mode_refusals_name_the_key(int8_checkpoint):
    with pytest.raises(WeightsModeError, match=r"model\.weights=dtype: .* stored in int8; set model\.weights=int8"):
        OP4KSR.from_pretrained(int8_checkpoint)
    with pytest.raises(WeightsModeError, match=r"model\.weights='int4'"):
        OP4KSR.from_pretrained(TINY, weights="int4")
    with pytest.raises(WeightsModeError, match=r"model\.weights=fp8 with model\.offload=blocks"):
        OP4KSR.from_preset("tiny", weights="fp8", offload="blocks")
